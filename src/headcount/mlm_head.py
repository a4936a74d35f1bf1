"""Fit a missing masked-LM head on a frozen encoder (`headcount fit-mlm-head`).

Some checkpoints ship without a usable masked-LM head: all-MiniLM-L6-v2 is a BERT encoder
whose decoder would be tied to the word embeddings, but whose `cls.predictions.transform`
and output bias were never saved, so the masked-LM ("pre-train") task cannot score it.
`fit_mlm_head` loads the checkpoint with `AutoModelForMaskedLM` (the missing head weights
are newly initialised; a missing square transform starts as the identity), freezes the
whole encoder (the base model, word embeddings included: the decoder is tied to them and
stays equal to them) and fits only the head's other parameters (BERT: transform dense +
LayerNorm + output bias; RoBERTa: dense + layer_norm + bias) on masked-LM blocks of a text,
with AdamW.

Because the encoder is frozen and in eval mode, its hidden states at the masked positions
are computed without gradients, once per block (and reused when blocks are revisited), and
the head runs at the masked positions only: a step costs a fraction of a full
forward/backward pass. Held-out blocks (every 10th block, spread over the text) are scored
with `headcount.evaluate.evaluate` before and after fitting: the code and metric of
`headcount evaluate --task mlm:TEXT`.

What to expect: on all-MiniLM-L6-v2 with BBC News the fitted head reaches held-out recall@1
of about 0.12 (loss about 6.9). At [MASK] inputs that is about the rate of always guessing
"the" (0.05); most hits are the 10% of targets left unchanged in the input. MiniLM was
distilled from attention relations and then tuned for sentence embeddings, never trained to
fill in masks, so its states at [MASK] carry little about the hidden token; a head cannot
add what the frozen encoder lacks.

Example:
    >>> model, tokenizer, record = fit_mlm_head("minilm/", "bbc/", HeadFit(steps=300))
    >>> save_fitted_head(model, tokenizer, record, "minilm-mlm/")
    >>> load_model("minilm-mlm/", "mlm")  # the masked-LM task can now score it
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from headcount.arch import encoder_of, mlm_head
from headcount.checkpoints import (
    is_pruned_config,
    load_pruned,
    save_pruned_atomically,
)
from headcount.choices import (
    MLM_HEAD_BATCH_SIZE,
    MLM_HEAD_LEARNING_RATE,
    MLM_HEAD_MAX_BLOCKS,
    MLM_HEAD_STEPS,
)
from headcount.data import EncodedData, prepare_data
from headcount.distributed import is_distributed, launched_distributed
from headcount.errors import ConfigError, DataError, HeadcountError, UnsupportedModelError
from headcount.evaluation import evaluate
from headcount.io import versions
from headcount.models import (
    TOKENIZER_FILES,
    head_keys,
    load_config,
    local_source,
    quiet_transformers,
    resolve_device,
)
from headcount.tasks.mlm import IGNORE_INDEX
from headcount.tasks.registry import MLM, resolve_task

RECORD_FILE = "mlm_head.json"
HELD_OUT_EVERY = 10      # every 10th block is held out ...
MAX_HELD_OUT = 128       # ... but at most about this many, spread evenly over the text
WARMUP = 0.06            # share of the steps with a rising learning rate (as fine-tuning)
WEIGHT_DECAY = 0.01      # on the transform's weight matrix only
CACHE_LIMIT_BYTES = 2 * 1024**3  # encoder features kept for reuse across epochs
FROZEN_NOTE = (
    "the encoder (base model, word embeddings included) was frozen; only the masked-LM "
    "head's other parameters were fitted, so the decoder stays tied to the word embeddings"
)


@dataclass(frozen=True)
class HeadFit:
    """How the head is fitted: `steps` of AdamW on `batch_size` blocks of `max_length`
    tokens at peak learning rate `lr`; `max_examples` caps the blocks (fitting + held-out;
    a seeded random choice; None: all), of which at most `max_held_out` are held out.
    `seed` fixes the new head weights, the masking (15%, 80/10/10) and the block order."""

    steps: int = MLM_HEAD_STEPS
    batch_size: int = MLM_HEAD_BATCH_SIZE
    max_length: int = 128
    lr: float = MLM_HEAD_LEARNING_RATE
    seed: int = 0
    max_examples: int | None = MLM_HEAD_MAX_BLOCKS
    max_held_out: int = MAX_HELD_OUT

    def check(self) -> None:
        """Every bad option in one ConfigError."""
        problems = []
        if self.steps < 1:
            problems.append(f"--steps {self.steps} must be at least 1")
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"--lr {self.lr} must be a positive number")
        if self.max_examples is not None and self.max_examples < 2:
            problems.append(f"--max-examples {self.max_examples} must be at least 2 (blocks "
                            "for fitting and for the held-out score)")
        if launched_distributed() or is_distributed():
            # The held-out score pools examples across processes, and each would save the
            # same checkpoint; the head is small enough for one process.
            problems.append("fit-mlm-head runs in a single process: start it without "
                            "torchrun or accelerate launch")
        if problems:
            raise ConfigError("; ".join(problems))


def _load_masked_lm(model_path: str, config) -> tuple[nn.Module, list[str], list[str]]:
    """(model with an MLM head, head keys newly initialised, checkpoint keys not used).
    Encoder weights missing from the checkpoint are an error: a random encoder cannot be
    frozen usefully."""
    from transformers import AutoModelForMaskedLM

    source = local_source(model_path)
    try:
        if is_pruned_config(config):
            model, missing = load_pruned(source, AutoModelForMaskedLM,
                                         config=copy.deepcopy(config))
            return model, sorted(missing), []
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    except OSError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HeadcountError(f"could not load the weights of {model_path}: {first_line}") \
            from None
    missing = sorted(info["missing_keys"])
    head = set(head_keys(missing, model))
    encoder_missing = [key for key in missing if key not in head]
    if encoder_missing:
        raise HeadcountError(
            f"{model_path}: encoder weights missing from the checkpoint "
            f"({', '.join(encoder_missing[:4])}{', ...' if len(encoder_missing) > 4 else ''}); "
            "fitting a head on a frozen random encoder is pointless"
        )
    return model, sorted(head), sorted(info.get("unexpected_keys") or [])


def _load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    source = local_source(model_path)
    path = Path(source)
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise HeadcountError(
            f"{model_path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise HeadcountError(f"could not load the tokenizer of {model_path}: {error}") from None


def freeze_encoder(model: nn.Module) -> tuple[list[str], int, int]:
    """Freeze the base model; returns (names of the head parameters left trainable, their
    size, the frozen size). A decoder tied to the word embeddings is the same tensor as
    them, so it is frozen with them."""
    for parameter in encoder_of(model).parameters():
        parameter.requires_grad_(False)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no masked-LM head parameters outside the encoder"
        )
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return [name for name, _ in trainable], sum(p.numel() for _, p in trainable), frozen


def initialise_missing_transform(model: nn.Module, missing: list[str]) -> list[str]:
    """Start each missing square projection of the head (BERT `transform.dense`, RoBERTa
    `lm_head.dense`, DistilBERT `vocab_transform`) as the identity with a zero bias; returns
    their weight names. The new head then starts by scoring hidden states against the tied
    embeddings themselves, and fits in fewer steps than from a random projection."""
    missing = set(missing)
    in_encoder = {id(module) for module in encoder_of(model).modules()}
    started = []
    for name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and id(module) not in in_encoder
                and f"{name}.weight" in missing and module.in_features == module.out_features):
            with torch.no_grad():
                module.weight.copy_(torch.eye(module.in_features))
                if module.bias is not None:
                    module.bias.zero_()
            started.append(f"{name}.weight")
    return started


def decoder_tied(model: nn.Module) -> bool:
    """Whether the output projection's weight is the word-embedding tensor itself."""
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return output is not None and output.weight is embeddings.weight


def held_out_split(num_blocks: int, max_held_out: int = MAX_HELD_OUT) -> tuple[list, list]:
    """(training blocks, held-out blocks): every 10th block, or sparser so that at most
    about `max_held_out` are held out; at least one of each."""
    if num_blocks < 2:
        raise DataError(
            f"the text makes {num_blocks} block; fitting needs at least 2 (one is held out): "
            "give more text or a smaller --max-length"
        )
    stride = max(HELD_OUT_EVERY, math.ceil(num_blocks / max(max_held_out, 1)))
    held = [i for i in range(num_blocks) if i % stride == stride - 1] or [num_blocks - 1]
    chosen = set(held)
    return [i for i in range(num_blocks) if i not in chosen], held


class _MaskedFeatures:
    """The frozen encoder's hidden states at the masked positions of each training block,
    with their target ids. Computed without gradients; kept for blocks that will be visited
    again (exact: a frozen encoder in eval mode gives the same states every time)."""

    def __init__(self, model: nn.Module, data: EncodedData, device, keep: bool):
        self.encoder, self.data, self.device, self.keep = encoder_of(model), data, device, keep
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _compute(self, indices: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        batch = {k: v.to(self.device) for k, v in self.data.collate(indices).items()}
        labels = batch.pop("labels")
        hidden = self.encoder(**batch).last_hidden_state  # [batch, seq, hidden]
        masked = labels != IGNORE_INDEX
        return {index: (hidden[row][masked[row]], labels[row][masked[row]])
                for row, index in enumerate(indices)}

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """([masked positions, hidden], [masked positions]) of the blocks at `indices`."""
        new = [i for i in indices if i not in self.cache]
        computed = self._compute(new) if new else {}
        if self.keep:
            self.cache.update(computed)
        parts = [self.cache[i] if i in self.cache else computed[i] for i in indices]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _order(num_blocks: int, steps: int, batch_size: int, seed: int):
    """Seeded shuffled batches of block indices, epoch after epoch, `steps` of them."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while True:
        order = torch.randperm(num_blocks, generator=generator).tolist()
        for start in range(0, num_blocks, batch_size):
            yield order[start:start + batch_size]
            produced += 1
            if produced == steps:
                return


def _fit(model, train: EncodedData, *, steps, batch_size, lr, seed, device,
         progress) -> list[float]:
    """AdamW on the head's trainable parameters; the per-step training losses."""
    from transformers import get_linear_schedule_with_warmup

    head = mlm_head(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in trainable if p.dim() > 1], "weight_decay": WEIGHT_DECAY},
         {"params": [p for p in trainable if p.dim() <= 1], "weight_decay": 0.0}],
        lr=lr,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, round(WARMUP * steps), steps)
    masked_per_block = sum(sum(t != IGNORE_INDEX for t in row) for row in train.labels) \
        / len(train)
    width = getattr(model.config, "hidden_size", None) or model.config.dim  # DistilBERT: dim
    cache_bytes = len(train) * masked_per_block * width * 4
    revisits = steps * batch_size > len(train)
    features = _MaskedFeatures(model, train, device, revisits and cache_bytes < CACHE_LIMIT_BYTES)
    losses = []
    bar = tqdm(total=steps, disable=not progress, desc="fit MLM head", unit="step")
    for indices in _order(len(train), steps, batch_size, seed):
        hidden, targets = features.batch(indices)
        logits = head(hidden)  # [masked, vocab]: the head runs at the masked positions only
        loss = F.cross_entropy(logits.float(), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return losses


def _score(model, data: EncodedData, batch_size: int, progress: bool) -> dict:
    result = evaluate(model, data.batches(batch_size), MLM, progress=progress,
                      total=data.num_batches(batch_size))
    return {"recall@1": result.score, "loss": result.mean_loss}


def _masked_lm_for_fitting(model_path: str, fit: HeadFit, device: torch.device):
    """(model with a head whose transform is initialised, newly initialised keys, unused
    checkpoint keys, identity-initialised keys, tokenizer)."""
    config = load_config(model_path)  # missing checkpoint or unsupported family: one line
    quiet_transformers()
    torch.manual_seed(fit.seed)  # the newly initialised head weights
    model, missing, unused = _load_masked_lm(model_path, config)
    identity = initialise_missing_transform(model, missing)
    if mlm_head(model) is None:
        raise UnsupportedModelError(f"{model_path}: {type(model).__name__} has no masked-LM head")
    model.to(device).eval()  # eval: no dropout in the frozen encoder (the head has none)
    return model, missing, unused, identity, _load_tokenizer(model_path)


def fit_mlm_head(
    model_path: str,
    text_path: str,
    fit: HeadFit = HeadFit(),
    *,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> tuple[nn.Module, object, dict]:
    """Fit the masked-LM head of `model_path` on the frozen encoder, with masked-LM blocks of
    the text at `text_path` (a file or a directory of .txt files), as `fit` says; returns
    (model, tokenizer, record). Runs are reproducible on a given device.
    """
    started = time.perf_counter()
    fit.check()
    task = resolve_task(f"mlm:{text_path}")  # a missing text fails before any loading
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model, missing, unused, identity, tokenizer = _masked_lm_for_fitting(model_path, fit, target)
    data = prepare_data(task, tokenizer, model.config, split="train", max_length=fit.max_length,
                        max_examples=fit.max_examples, seed=fit.seed)
    train_indices, held_indices = held_out_split(len(data), fit.max_held_out)
    train, held_out = data.select(train_indices), data.select(held_indices)
    tied = decoder_tied(model)
    fitted, trainable_size, frozen_size = freeze_encoder(model)
    embeddings_before = model.get_input_embeddings().weight.detach().clone()
    before = _score(model, held_out, fit.batch_size, progress)
    fit_started = time.perf_counter()
    losses = _fit(model, train, steps=fit.steps, batch_size=fit.batch_size, lr=fit.lr,
                  seed=fit.seed, device=target, progress=progress)
    fit_seconds = time.perf_counter() - fit_started
    after = _score(model, held_out, fit.batch_size, progress)
    for parameter in model.parameters():
        parameter.requires_grad_(True)  # as loaded: later users fine-tune or gate it
    if not torch.equal(model.get_input_embeddings().weight, embeddings_before):
        raise RuntimeError("the word embeddings changed while fitting the MLM head (a bug)")
    tail = max(1, fit.steps // 10)
    record = {
        "base_model": model_path, "text": str(text_path), "steps": fit.steps,
        "batch_size": fit.batch_size, "max_length": fit.max_length, "lr": fit.lr,
        "warmup": WARMUP, "weight_decay": WEIGHT_DECAY, "seed": fit.seed,
        "max_examples": fit.max_examples, "train_blocks": len(train),
        "held_out_blocks": len(held_out),
        "held_out_masked_tokens": sum(sum(t != IGNORE_INDEX for t in row)
                                      for row in held_out.labels),
        "missing_keys": missing, "initialised_as_identity": identity,
        "unused_checkpoint_keys": unused, "fitted_parameters": fitted,
        "trainable_parameters": trainable_size, "frozen_parameters": frozen_size,
        "encoder_frozen": True, "decoder_tied_to_embeddings": tied, "note": FROZEN_NOTE,
        "held_out": {"before": before, "after": after},
        "train_loss_first_steps": sum(losses[:tail]) / tail,
        "train_loss_last_steps": sum(losses[-tail:]) / tail,
        "fit_seconds": fit_seconds, "seconds": time.perf_counter() - started,
        "device": str(target), "versions": versions(),
    }
    return model, tokenizer, record


def save_fitted_head(model: nn.Module, tokenizer, record: dict, out: str | Path) -> Path:
    """Write the checkpoint (model with its fitted head, tokenizer, `mlm_head.json`)
    atomically: an interrupted save leaves nothing at `out`."""
    return save_pruned_atomically(model, out, tokenizer, {RECORD_FILE: record})


