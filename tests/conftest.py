"""Tiny random models of every supported architecture, a tiny tokenizer, saved checkpoints.

Nothing here downloads: models are built from configs with a fixed seed, the tokenizer from
a word list. `initializer_range` is large so that gating a head visibly changes outputs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import (
    AlbertConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    DebertaConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    RobertaConfig,
    RoFormerConfig,
    XLMRobertaConfig,
    XLMRobertaXLConfig,
)

from headcount.data import EncodedData
from headcount.models import quiet_transformers
from headcount.tasks.mlm import IGNORE_INDEX

quiet_transformers()

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = REPO.parent / "shared" / "data" / "glue"
WIKITEXT_DIR = REPO.parent / "shared" / "data" / "wikitext-2"

VOCAB_SIZE = 128
WORDS = (
    "the a an is was be to of and in it that this movie film good bad great terrible not "
    "very really story acting fun boring love hate one two man woman dog cat sat on mat "
    "what who why how where question answer yes no same different play plays played"
).split()

COMMON = dict(vocab_size=VOCAB_SIZE, initializer_range=0.3, pad_token_id=0)
BERT_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)


# DeBERTa as released: relative attention with c2p and p2c, no absolute positions, no token
# types. v2/v3 (`deberta-v2`): log-bucketed positions (16 buckets here, 256 in v3) whose
# embeddings pass a LayerNorm, and the key/query projections shared with the positions.
DEBERTA = dict(relative_attention=True, position_biased_input=False, type_vocab_size=0)
DEBERTA_V2 = dict(DEBERTA, pos_att_type=["p2c", "c2p"], position_buckets=16,
                  norm_rel_ebd="layer_norm", share_att_key=True)
# ModernBERT: layer 0 global, layer 1 local with a window of 4 tokens (2 each side), so that
# the 8-10 token test inputs see the difference; biases on, so that their slicing is tested
# (released checkpoints have none).
MODERNBERT = dict(vocab_size=VOCAB_SIZE, initializer_range=0.3, pad_token_id=0,
                  bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                  global_attn_every_n_layers=2, local_attention=4, attention_bias=True,
                  mlp_bias=True, hidden_activation="gelu")


def _new_family_config(family: str):
    """The families beyond the first six: DeBERTa (v1, v2/v3), ModernBERT, MPNet, and two
    recognised by structure (BERT's layer layout): RoFormer and XLM-RoBERTa-XL."""
    if family == "deberta":
        return DebertaConfig(**COMMON, **BERT_SHAPE, **DEBERTA, pos_att_type=["c2p", "p2c"])
    if family == "deberta-v2":
        return DebertaV2Config(**COMMON, **BERT_SHAPE, **DEBERTA_V2)
    if family == "modernbert":
        return ModernBertConfig(**MODERNBERT, **BERT_SHAPE)
    if family == "mpnet":  # MPNet's padding index is 1, its positions start after it
        return MPNetConfig(**{**COMMON, "pad_token_id": 1}, **BERT_SHAPE)
    if family == "roformer":
        return RoFormerConfig(**COMMON, **BERT_SHAPE, embedding_size=32)
    if family == "xlm-roberta-xl":
        return XLMRobertaXLConfig(**COMMON, **BERT_SHAPE, type_vocab_size=1)
    raise ValueError(family)


def make_config(family: str, **overrides):
    """Tiny config of a family: 2 layers (3 applications for ALBERT) x 4 heads, width 32."""
    if family in NEW_FAMILIES:
        config = _new_family_config(family)
    elif family == "bert":
        config = BertConfig(**COMMON, **BERT_SHAPE)
    elif family == "roberta":
        config = RobertaConfig(**COMMON, **BERT_SHAPE, type_vocab_size=1)
    elif family == "xlm-roberta":
        config = XLMRobertaConfig(**COMMON, **BERT_SHAPE, type_vocab_size=1)
    elif family == "electra":
        config = ElectraConfig(**COMMON, **BERT_SHAPE, embedding_size=24)
    elif family == "distilbert":
        config = DistilBertConfig(**COMMON, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                  max_position_embeddings=64)
    elif family == "albert":
        config = AlbertConfig(**COMMON, embedding_size=24, hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=64, hidden_act="gelu")
    else:
        raise ValueError(family)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


NEW_FAMILIES = ("deberta", "deberta-v2", "modernbert", "mpnet", "roformer", "xlm-roberta-xl")
FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "albert", *NEW_FAMILIES)


def supports_sdpa(family: str) -> bool:
    """Whether transformers has an SDPA implementation of the family (DeBERTa, MPNet and
    RoFormer compute their attention themselves: eager only)."""
    config = make_config(family)
    return bool(AutoModelForSequenceClassification._model_mapping[type(config)]._supports_sdpa)


def make_model(family: str, *, head: str = "classification", attn: str | None = None,
               num_labels: int = 2, dtype=torch.float32, seed: int = 0, **overrides):
    """Tiny random model in eval mode; head is 'classification' or 'mlm'. `attn` None is
    SDPA where the family has it, else eager; "sdpa" for a family without it skips the
    test."""
    if attn is None:
        attn = "sdpa" if supports_sdpa(family) else "eager"
    elif attn == "sdpa" and not supports_sdpa(family):
        pytest.skip(f"{family} has no SDPA attention")
    torch.manual_seed(seed)
    config = make_config(family, num_labels=num_labels, **overrides)
    cls = AutoModelForMaskedLM if head == "mlm" else AutoModelForSequenceClassification
    model = cls.from_config(config, attn_implementation=attn)
    return model.to(dtype).eval()


def in_float64(monkeypatch, family: str) -> None:
    """Some families compute parts of their forward in float32 whatever the model's dtype
    (DeBERTa's LayerNorm, ModernBERT's rotary embedding of q and k), which drowns a finite
    difference of 1e-6 in rounding: for such checks those parts compute in the input's
    dtype (the same functions, without the casts)."""
    if family == "deberta":
        from transformers.models.deberta import modeling_deberta

        def forward(self, hidden_states):
            mean = hidden_states.mean(-1, keepdim=True)
            variance = (hidden_states - mean).pow(2).mean(-1, keepdim=True)
            normed = (hidden_states - mean) / torch.sqrt(variance + self.variance_epsilon)
            return self.weight * normed + self.bias

        monkeypatch.setattr(modeling_deberta.DebertaLayerNorm, "forward", forward)
    if family == "modernbert":
        from transformers.models.modernbert import modeling_modernbert

        def rotary(q, k, cos, sin, unsqueeze_dim=1):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
            rotate = modeling_modernbert.rotate_half
            return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

        monkeypatch.setattr(modeling_modernbert, "apply_rotary_pos_emb", rotary)


def random_batch(model, batch_size: int = 3, seq_len: int = 9, *, seed: int = 1,
                 pad_last: int = 3) -> dict[str, torch.Tensor]:
    """Random token ids with the last example padded by `pad_last` positions (with the
    model's padding id)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    if pad_last:
        mask[-1, -pad_last:] = 0
        ids[-1, -pad_last:] = model.config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask}


def classification_batch(model, batch_size=5, seq_len=8, seed=1, pad_last=3):
    """`random_batch` with class labels cycling through the model's labels."""
    batch = random_batch(model, batch_size, seq_len, seed=seed, pad_last=pad_last)
    batch["labels"] = torch.arange(batch_size) % model.config.num_labels
    return batch


def mlm_batch(model, batch_size=4, seq_len=10, seed=2):
    """`random_batch` with 1-3 masked-LM targets per example (at real positions)."""
    batch = random_batch(model, batch_size, seq_len, seed=seed, pad_last=2)
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    generator = torch.Generator().manual_seed(seed)
    for row in range(batch_size):
        length = int(batch["attention_mask"][row].sum())
        positions = torch.randperm(length, generator=generator)[: 1 + row % 3]
        labels[row, positions] = batch["input_ids"][row, positions]
    batch["labels"] = labels
    return batch


def toy_data(size=24, seed=0) -> EncodedData:
    """A small random classification set whose label is the parity of the id sum."""
    generator = torch.Generator().manual_seed(seed)
    ids = [[2, *torch.randint(5, 100, (int(n),), generator=generator).tolist(), 3]
           for n in torch.randint(3, 9, (size,), generator=generator)]
    labels = [int(sum(row)) % 2 for row in ids]
    return EncodedData("classification", ids, None, labels, pad_token_id=0)


def write_tokenizer(directory: Path) -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz.,!?'0123456789"]
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    assert len(vocab) <= VOCAB_SIZE
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")  # for the slow tokenizer
    # transformers 5 ignores vocab_file= here: pass the vocabulary itself.
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)},
                                  do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def save_checkpoint(directory: Path, family: str = "bert", *, head: str = "classification",
                    num_labels: int = 2, seed: int = 0) -> Path:
    """A loadable checkpoint directory (weights, config, tokenizer) of a tiny model."""
    model = make_model(family, head=head, num_labels=num_labels, seed=seed)
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return directory


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models: thread start-up and contention cost more than they save (10x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny BERT checkpoints: 2-label classifier, regression, 3-label, masked LM."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "cls2": save_checkpoint(root / "cls2"),
        "cls3": save_checkpoint(root / "cls3", num_labels=3),
        "regression": save_checkpoint(root / "regression", num_labels=1),
        "mlm": save_checkpoint(root / "mlm", head="mlm"),
        "albert-mlm": save_checkpoint(root / "albert-mlm", "albert", head="mlm"),
        "albert-cls2": save_checkpoint(root / "albert-cls2", "albert"),
    }


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE_DIR.is_dir():
        pytest.skip(f"shared GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR


@dataclass
class MemoryLog:
    """What `out_of_memory_above` saw: the batch sizes that ran and those that raised."""

    ran: list[int] = field(default_factory=list)
    raised: list[int] = field(default_factory=list)


@contextmanager
def out_of_memory_above(rows: int, *, inference_only: bool = False):
    """Every embedding lookup of more than `rows` examples raises torch.OutOfMemoryError
    during the block, as a device that holds at most `rows` examples would (with
    `inference_only`, only where no gradient is taken: evaluation, drift, the estimators
    other than the gradient; not training). Yields a `MemoryLog`."""
    log = MemoryLog()

    def hook(module, args):
        if not isinstance(module, torch.nn.Embedding) or not args or args[0].dim() != 2:
            return
        if inference_only and torch.is_grad_enabled():
            return
        size = args[0].shape[0]
        if size > rows:
            log.raised.append(size)
            raise torch.OutOfMemoryError(f"CUDA out of memory (test: {size} > {rows} rows)")
        log.ran.append(size)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield log
    finally:
        handle.remove()


@pytest.fixture
def offline(monkeypatch):
    """The hub unreachable for this test (HF_HUB_OFFLINE=1), whatever was imported before it:
    a model or data set name that does not resolve locally fails at once."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
