"""From tasks to batches: subsets, dynamic padding, masked-LM blocks and masking, raw text."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WIKITEXT_DIR, WORDS, make_config, write_tokenizer
from transformers import AutoTokenizer, BertTokenizerFast
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from headcount.data import EncodedData, choose_subset, prepare_data
from headcount.errors import ConfigError, DataError
from headcount.tasks.mlm import IGNORE_INDEX, make_blocks, mask_block, read_documents
from headcount.tasks.registry import CLASSIFICATION, MLM, REGRESSION, resolve_task

CLS, SEP, PAD, MASK, UNK = 2, 3, 0, 4, 1  # ids of conftest's tiny vocabulary


# --------------------------------------------------------------------------- choose_subset


def test_no_options_keeps_everything():
    assert choose_subset(7) == list(range(7))
    assert choose_subset(7, fraction=1.0) == list(range(7))
    assert choose_subset(7, max_examples=7) == list(range(7))
    assert choose_subset(7, max_examples=100) == list(range(7))


@pytest.mark.parametrize("kwargs, size", [
    ({"fraction": 0.5}, 50),
    ({"fraction": 0.2}, 20),
    ({"fraction": 0.333}, 33),
    ({"max_examples": 17}, 17),
    ({"fraction": 0.5, "max_examples": 10}, 10),
    ({"fraction": 0.1, "max_examples": 50}, 10),
])
def test_subset_sizes_sorted_unique(kwargs, size):
    indices = choose_subset(100, seed=3, **kwargs)
    assert len(indices) == size
    assert indices == sorted(set(indices))
    assert all(0 <= i < 100 for i in indices)


def test_subset_is_seeded():
    assert choose_subset(1000, fraction=0.1, seed=5) == choose_subset(1000, fraction=0.1, seed=5)
    assert choose_subset(1000, max_examples=30, seed=5) == \
        choose_subset(1000, max_examples=30, seed=5)
    assert choose_subset(1000, fraction=0.1, seed=5) != choose_subset(1000, fraction=0.1, seed=6)
    # a random subset, not the first rows
    assert choose_subset(1000, max_examples=30, seed=5) != list(range(30))


def test_max_examples_draws_from_the_fraction():
    fraction = set(choose_subset(500, fraction=0.2, seed=11))
    both = choose_subset(500, fraction=0.2, max_examples=25, seed=11)
    assert len(both) == 25 and set(both) <= fraction


@pytest.mark.parametrize("kwargs", [
    {"fraction": 0.0}, {"fraction": -0.5}, {"fraction": 1.5}, {"max_examples": 0},
    {"max_examples": -3},
])
def test_bad_subset_options(kwargs):
    with pytest.raises(ConfigError) as error:
        choose_subset(10, **kwargs)
    value = next(iter(kwargs.values()))
    assert str(value) in str(error.value)


@pytest.mark.parametrize("num_examples, kwargs", [
    (0, {}), (10, {"fraction": 0.01}), (0, {"max_examples": 5}),
])
def test_empty_subset_is_a_data_error(num_examples, kwargs):
    with pytest.raises(DataError, match="no examples left"):
        choose_subset(num_examples, **kwargs)


# --------------------------------------------------------------------------- batches


def _encoded(count=11, *, kind=CLASSIFICATION, types=True, seed=0) -> EncodedData:
    """Example i: [CLS] (50+i) ... [SEP] of a random length, label i (or i/10 for regression,
    or per-token labels for masked LM); token types switch to 1 half-way."""
    rng = random.Random(seed)
    ids, type_ids, labels = [], [], []
    for i in range(count):
        length = rng.randint(3, 12)
        row = [CLS] + [50 + i] * (length - 2) + [SEP]
        ids.append(row)
        type_ids.append([0] * (length // 2) + [1] * (length - length // 2))
        if kind == MLM:
            labels.append([IGNORE_INDEX, 50 + i] + [IGNORE_INDEX] * (length - 2))
        else:
            labels.append(i / 10 if kind == REGRESSION else i)
    return EncodedData(kind, ids, type_ids if types else None, labels, pad_token_id=PAD)


def _example_of(row: torch.Tensor) -> int:
    return int(row[1]) - 50


def test_batches_pad_each_batch_to_its_own_longest():
    data = _encoded()
    lengths = [len(row) for row in data.input_ids]
    for batch in data.batches(4):
        widths = [lengths[_example_of(row)] for row in batch["input_ids"]]
        assert batch["input_ids"].shape[1] == max(widths)
        assert batch["attention_mask"].sum(dim=1).tolist() == widths
        for row, mask, types, width in zip(batch["input_ids"], batch["attention_mask"],
                                           batch["token_type_ids"], widths, strict=True):
            assert row[width:].tolist() == [PAD] * (len(row) - width)
            assert mask[:width].tolist() == [1] * width and not mask[width:].any()
            assert not types[width:].any()


def test_sorted_batches_go_from_longest_to_shortest():
    data = _encoded(count=13)
    batches = list(data.batches(3))
    assert len(batches) == data.num_batches(3) == 5
    lengths = [int(n) for batch in batches for n in batch["attention_mask"].sum(dim=1)]
    assert lengths == sorted(lengths, reverse=True)
    assert batches[0]["input_ids"].shape[1] == max(len(row) for row in data.input_ids)
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3, 3, 3, 1]


@pytest.mark.parametrize("sort_by_length", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4, 11, 50])
def test_every_example_once_with_its_own_label_and_types(sort_by_length, batch_size):
    data = _encoded()
    seen = []
    for batch in data.batches(batch_size, sort_by_length=sort_by_length):
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert batch["labels"].dtype == torch.long
        for row, mask, types, label in zip(batch["input_ids"], batch["attention_mask"],
                                           batch["token_type_ids"], batch["labels"], strict=True):
            i = _example_of(row)
            width = int(mask.sum())
            assert row[:width].tolist() == data.input_ids[i]
            assert types[:width].tolist() == data.token_type_ids[i]
            assert int(label) == i
            seen.append(i)
    assert sorted(seen) == list(range(len(data)))
    if not sort_by_length:
        assert seen == list(range(len(data)))


def test_regression_labels_are_float_and_no_token_types():
    data = _encoded(kind=REGRESSION, types=False)
    for batch in data.batches(4):
        assert "token_type_ids" not in batch
        assert batch["labels"].dtype == torch.float32
        for row, label in zip(batch["input_ids"], batch["labels"], strict=True):
            assert float(label) == pytest.approx(_example_of(row) / 10)


def test_masked_lm_labels_are_padded_with_ignore_index():
    data = _encoded(kind=MLM)
    for batch in data.batches(4):
        assert batch["labels"].shape == batch["input_ids"].shape
        for row, mask, labels in zip(batch["input_ids"], batch["attention_mask"],
                                     batch["labels"], strict=True):
            width = int(mask.sum())
            assert labels[:width].tolist() == data.labels[_example_of(row)]
            assert (labels[width:] == IGNORE_INDEX).all()


def test_select_keeps_rows_aligned():
    data = _encoded()
    picked = data.select([7, 2])
    assert len(picked) == 2
    assert picked.input_ids == [data.input_ids[7], data.input_ids[2]]
    assert picked.token_type_ids == [data.token_type_ids[7], data.token_type_ids[2]]
    assert picked.labels == [7, 2]
    assert _encoded(types=False).select([1]).token_type_ids is None


# --------------------------------------------------------------------------- masked LM blocks


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(directory)
    return directory / "vocab.txt"


@pytest.fixture(scope="module")
def python_tokenizer(vocab_file):
    """A Python-backend BERT tokenizer: it has build_inputs_with_special_tokens."""
    return BertTokenizerLegacy(str(vocab_file), do_lower_case=True)


@pytest.fixture(scope="module")
def saved_fast_tokenizer(vocab_file, tmp_path_factory):
    """The tokenizer headcount gets from AutoTokenizer for a checkpoint directory."""
    words = vocab_file.read_text(encoding="utf-8").splitlines()
    directory = tmp_path_factory.mktemp("fast-tokenizer")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def _documents(count=30, words_per_document=23, seed=0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words_per_document))
            for _ in range(count)]


def _check_blocks(tokenizer, documents, max_length):
    blocks = make_blocks(tokenizer, documents, max_length)
    stream = [t for d in documents for t in tokenizer(d, add_special_tokens=False)["input_ids"]]
    assert all(len(block) == max_length for block in blocks[:-1])
    assert 3 <= len(blocks[-1]) <= max_length
    assert all(block[0] == CLS and block[-1] == SEP for block in blocks)
    assert all(CLS not in block[1:-1] and SEP not in block[1:-1] for block in blocks)
    assert [t for block in blocks for t in block[1:-1]] == stream  # nothing lost or repeated
    return blocks


@pytest.mark.parametrize("max_length", [3, 16, 32, 64])
def test_blocks_have_max_length_and_special_tokens(python_tokenizer, max_length):
    blocks = _check_blocks(python_tokenizer, _documents(), max_length)
    assert len(blocks) == -(-30 * 23 // (max_length - 2))


def test_blocks_with_the_tokenizer_headcount_loads(saved_fast_tokenizer):
    _check_blocks(saved_fast_tokenizer, _documents(), 16)


def test_blocks_are_tokenised_once_per_tokenizer_text_and_length(python_tokenizer,
                                                                 saved_fast_tokenizer):
    documents = _documents(seed=3)
    blocks = make_blocks(python_tokenizer, documents, 16)
    assert make_blocks(python_tokenizer, list(documents), 16) is blocks  # the same text
    assert make_blocks(python_tokenizer, documents, 32) is not blocks
    assert make_blocks(python_tokenizer, documents[:-1], 16) != blocks
    _check_blocks(saved_fast_tokenizer, documents, 16)  # another tokenizer: its own blocks


def test_blocks_errors(python_tokenizer):
    with pytest.raises(DataError, match="--max-length 2"):
        make_blocks(python_tokenizer, ["the movie"], 2)
    with pytest.raises(DataError, match="tokenises to nothing"):
        make_blocks(python_tokenizer, [" ", "\t"], 16)


# --------------------------------------------------------------------------- masking


def _block(length=30, *, seed=0, low=1000, high=2000):
    rng = np.random.default_rng(seed)
    ids = [CLS, *rng.integers(low, high, size=length - 2).tolist(), SEP]
    special = [1] + [0] * (length - 2) + [1]
    return ids, special


def _mask(ids, special, *, seed=0, index=0, vocab_size=30000, **kwargs):
    return mask_block(ids, special, seed=seed, index=index, mask_token_id=MASK,
                      vocab_size=vocab_size, **kwargs)


def test_masking_is_reproducible_from_seed_and_index():
    ids, special = _block(200)
    assert _mask(ids, special, seed=1, index=5) == _mask(ids, special, seed=1, index=5)
    assert _mask(ids, special, seed=1, index=5) != _mask(ids, special, seed=1, index=6)
    assert _mask(ids, special, seed=1, index=5) != _mask(ids, special, seed=2, index=5)
    # the input lists are not modified
    assert ids == _block(200)[0]


def test_masking_labels_and_changes_only_chosen_non_special_positions():
    for index in range(50):
        ids, special = _block(40, seed=index)
        special[7] = special[8] = 1  # e.g. [UNK] inside the text
        inputs, labels = _mask(ids, special, index=index)
        assert len(inputs) == len(labels) == len(ids)
        chosen = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
        assert chosen, "every block needs at least one masked position"
        assert all(special[p] == 0 for p in chosen)
        assert all(labels[p] == ids[p] for p in chosen)
        assert all(inputs[p] == ids[p] for p in range(len(ids)) if p not in chosen)


@pytest.mark.parametrize("length", [3, 4, 6])
def test_short_blocks_still_get_one_masked_position(length):
    for index in range(40):
        ids, special = _block(length)
        _, labels = _mask(ids, special, index=index)
        assert sum(label != IGNORE_INDEX for label in labels) >= 1


def test_probability_zero_masks_exactly_one_position():
    ids, special = _block(100)
    _, labels = _mask(ids, special, probability=0.0)
    assert sum(label != IGNORE_INDEX for label in labels) == 1


def test_a_block_without_maskable_tokens_is_a_data_error():
    with pytest.raises(DataError, match="block 9"):
        _mask([CLS, UNK, SEP], [1, 1, 1], index=9)


def test_masking_statistics_follow_bert():
    """15% of the maskable tokens are chosen; of those 80% [MASK], 10% random, 10% kept."""
    vocab_size = 30000
    chosen = masked = kept = randomised = candidates = 0
    random_ids = []
    for index in range(1500):
        ids, special = _block(130, seed=index)
        inputs, labels = _mask(ids, special, seed=7, index=index, vocab_size=vocab_size)
        candidates += 128
        for original, now, label in zip(ids, inputs, labels, strict=True):
            if label == IGNORE_INDEX:
                continue
            chosen += 1
            if now == MASK:
                masked += 1
            elif now == original:
                kept += 1
            else:
                randomised += 1
                random_ids.append(now)
    assert chosen / candidates == pytest.approx(0.15, abs=0.005)
    assert masked / chosen == pytest.approx(0.8, abs=0.01)
    assert randomised / chosen == pytest.approx(0.1, abs=0.01)
    assert kept / chosen == pytest.approx(0.1, abs=0.01)
    # random replacements come from the whole vocabulary, not from the block
    assert min(random_ids) >= 0 and max(random_ids) < vocab_size
    assert sum(1000 <= i < 2000 for i in random_ids) / len(random_ids) < 0.1


# --------------------------------------------------------------------------- prepare_data (mlm)


@pytest.fixture
def mlm_text(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    paragraphs = _documents(count=40, words_per_document=25, seed=3)
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def test_block_masking_does_not_depend_on_the_other_selected_blocks(python_tokenizer, mlm_text):
    task = resolve_task(f"mlm:{mlm_text}")
    config = make_config("bert")

    def prepare(**kwargs):
        return prepare_data(task, python_tokenizer, config, split="train", max_length=16,
                            seed=4, **kwargs)

    full = prepare()
    assert full.kind == MLM and len(full) == -(-40 * 25 // 14)
    assert full.token_type_ids == [[0] * len(ids) for ids in full.input_ids]
    for kwargs in ({"max_examples": 9}, {"fraction": 0.5}, {"fraction": 0.3, "max_examples": 4}):
        part = prepare(**kwargs)
        keep = choose_subset(len(full), seed=4, **kwargs)
        assert len(part) == len(keep)
        assert part.input_ids == [full.input_ids[i] for i in keep]
        assert part.labels == [full.labels[i] for i in keep]
    other_seed = prepare_data(task, python_tokenizer, config, split="train", max_length=16,
                              seed=5)
    assert other_seed.labels != full.labels


# --------------------------------------------------------------------------- read_documents


def test_read_documents_splits_wikitext_style_text(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(
        " \n = Valkyria Chronicles = \n \n First line of the article . \n Second line . \n"
        " \n = = Gameplay = = \n \n The game plays well . \n = = = Reception = = = \n"
        " Praised . \n\n\n Last paragraph \n",
        encoding="utf-8",
    )
    assert read_documents(path) == [
        "First line of the article . Second line .",
        "The game plays well .",
        "Praised .",
        "Last paragraph",
    ]


@pytest.mark.skipif(not (WIKITEXT_DIR / "wiki.valid.tokens").is_file(),
                    reason="no WikiText-2 data")
def test_read_documents_on_wikitext():
    documents = read_documents(WIKITEXT_DIR / "wiki.valid.tokens")
    assert len(documents) > 100
    assert documents[0].startswith("Homarus gammarus , known as the European lobster")
    for document in documents:
        assert document == document.strip() and document
        assert "\n" not in document
        assert not (document.startswith("= ") and document.endswith(" ="))
    # headings separate documents: none of them is glued into a paragraph
    assert not any(document.startswith("= Homarus") for document in documents)
    assert "= = Description = =" not in " ".join(documents)


def test_read_documents_latin1_file(tmp_path):
    path = tmp_path / "bbc.txt"
    path.write_bytes("Caf\u00e9 society \u00a3 5m\n\nna\u00efve second".encode("latin-1"))
    assert read_documents(path) == ["Caf\u00e9 society \u00a3 5m", "na\u00efve second"]


def test_read_documents_directory(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("second file\n", encoding="utf-8")
    (tmp_path / "a.tokens").write_text("first file\n\nstill first file\n", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not text\n", encoding="utf-8")
    assert read_documents(tmp_path) == ["first file", "still first file", "second file"]


def test_read_documents_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_documents(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no text files"):
        read_documents(tmp_path / "empty")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n = Heading = \n\n")
    with pytest.raises(DataError, match="no text found"):
        read_documents(blank)


def test_prepared_masked_lm_examples_have_targets_inside_the_text(python_tokenizer, mlm_text):
    """Every prepared masked-LM example has at least one target, never at [CLS]/[SEP]."""
    data = prepare_data(resolve_task(f"mlm:{mlm_text}"), python_tokenizer, make_config("bert"),
                        split="train", max_length=16)
    for ids, labels in zip(data.input_ids, data.labels, strict=True):
        assert len(ids) == len(labels) <= 16
        targets = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
        assert targets and 0 not in targets and len(ids) - 1 not in targets
