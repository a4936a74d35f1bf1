"""The masked-LM ("pre-train") task: raw text -> fixed-length blocks -> BERT-style masking.

Text is split into documents, tokenised, concatenated and cut into blocks of
`max_length - special tokens` tokens, as Hugging Face's `run_mlm` does without
`--line_by_line`: no padding is wasted. Each block is then masked with its own random
stream derived from (seed, block index), so a block's masking does not depend on which
other blocks were selected, on the batch size or on the number of processes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from headcount.errors import DataError

TEXT_SUFFIXES = (".txt", ".tokens", ".raw", ".text")
MASK_PROBABILITY = 0.15
IGNORE_INDEX = -100  # label of positions that are not predicted (PyTorch's CE default)


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(
                f"no text files ({', '.join(TEXT_SUFFIXES)}) under directory {path}"
            )
        return files
    raise DataError(f"masked-LM text not found: {path} (expected a text file or a directory)")


def read_documents(path: str | Path) -> list[str]:
    """Documents of a text file or directory: one per file, or per blank-line paragraph.

    WikiText-style files (one file, many articles) are split at blank lines and at
    ` = Heading = ` lines so that no block straddles unrelated articles needlessly.
    Files that are not UTF-8 (BBC News is latin-1) are read as latin-1.
    """
    documents: list[str] = []
    for file in _text_files(Path(path)):
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        paragraph: list[str] = []
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped or (stripped.startswith("= ") and stripped.endswith(" =")):
                if paragraph:
                    documents.append(" ".join(paragraph))
                    paragraph = []
                continue
            paragraph.append(stripped)
        if paragraph:
            documents.append(" ".join(paragraph))
    if not documents:
        raise DataError(f"no text found in {path}")
    return documents


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one text ([CLS] / [SEP], <s> / </s>).

    Read off a real encoding, because transformers 5 fast tokenizers no longer offer
    `build_inputs_with_special_tokens`.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start:start + len(plain)] == plain:
            return framed[:start], framed[start + len(plain):]
    raise DataError("cannot tell where the tokenizer puts its special tokens")


# The blocks of the last few (tokenizer, text, length) asked for: a study tokenises the same
# masked-LM text for every unit that scores the masked LM (importance, each curve, each
# estimator, the sparsity sweep); tokenising a corpus such as BBC News takes seconds.
_BLOCKS: OrderedDict[tuple, list[list[int]]] = OrderedDict()
_BLOCKS_KEPT = 2


def make_blocks(tokenizer, documents: list[str], max_length: int) -> list[list[int]]:
    """Token-id blocks of exactly `max_length` tokens (the last may be shorter), with the
    tokenizer's special tokens around each ([CLS] … [SEP] or <s> … </s>). The same
    tokenizer, text and length give the same (shared) list again without tokenising: do not
    change it."""
    key = (_digest("\x00".join(documents)), _tokenizer_digest(tokenizer), max_length,
           len(documents))
    if key in _BLOCKS:
        _BLOCKS.move_to_end(key)
        return _BLOCKS[key]
    blocks = _tokenised_blocks(tokenizer, documents, max_length)
    _BLOCKS[key] = blocks
    while len(_BLOCKS) > _BLOCKS_KEPT:
        _BLOCKS.popitem(last=False)
    return blocks


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _tokenizer_digest(tokenizer) -> str:
    """What decides how a tokenizer splits text: a fast tokenizer's whole definition
    (normaliser, pre-tokeniser, vocabulary), else its class, vocabulary and options."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return _digest(type(tokenizer).__name__ + backend.to_str())
    vocabulary = sorted(tokenizer.get_vocab().items())
    options = sorted((str(k), repr(v)) for k, v in getattr(tokenizer, "init_kwargs", {}).items())
    return _digest(repr((type(tokenizer).__name__, vocabulary, options)))


def _tokenised_blocks(tokenizer, documents: list[str], max_length: int) -> list[list[int]]:
    prefix, suffix = special_token_frame(tokenizer)
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise DataError(f"--max-length {max_length} leaves no room for text in a block")
    encoded = tokenizer(documents, add_special_tokens=False, return_attention_mask=False)
    stream = [token for ids in encoded["input_ids"] for token in ids]
    if not stream:
        raise DataError("the masked-LM text tokenises to nothing")
    return [prefix + stream[start:start + body] + suffix for start in range(0, len(stream), body)]


def mask_block(
    ids: list[int], special_mask: list[int], *, seed: int, index: int, mask_token_id: int,
    vocab_size: int, probability: float = MASK_PROBABILITY,
) -> tuple[list[int], list[int]]:
    """BERT masking of one block: choose each non-special token with `probability`; of the
    chosen, 80% become [MASK], 10% a random token, 10% stay. Returns (input_ids, labels).

    At least one token is chosen, so that every block has a loss and a recall@1 term.
    """
    rng = np.random.default_rng([seed, index])
    candidates = np.flatnonzero(np.asarray(special_mask) == 0)
    if candidates.size == 0:
        raise DataError(f"masked-LM block {index} has no maskable tokens")
    chosen = candidates[rng.random(candidates.size) < probability]
    if chosen.size == 0:
        chosen = rng.choice(candidates, size=1)
    inputs = np.asarray(ids)
    labels = np.full(len(ids), IGNORE_INDEX)
    labels[chosen] = inputs[chosen]
    action = rng.random(chosen.size)
    inputs[chosen[action < 0.8]] = mask_token_id
    randomised = chosen[(action >= 0.8) & (action < 0.9)]
    inputs[randomised] = rng.integers(0, vocab_size, size=randomised.size)
    return inputs.tolist(), labels.tolist()
