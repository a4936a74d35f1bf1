"""One forward pass of a task: each example's own loss, and predictions for the metric.

Per-example losses (not their batch mean) are what make exact per-example importance
possible: with one gate per example, the gradient of their sum w.r.t. example b's gate is
∂L(x_b)/∂ξ_b. The losses are the tasks' own: cross-entropy for classification, squared
error for regression (STS-B), and for masked LM the mean cross-entropy over the example's
masked positions, with vocabulary logits computed at the masked positions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from headcount.arch import encoder_of, mlm_head
from headcount.errors import UnsupportedModelError
from headcount.tasks.mlm import IGNORE_INDEX
from headcount.tasks.registry import CLASSIFICATION, MLM, REGRESSION

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the device its inputs must go to)."""
    return next(model.parameters()).device


@dataclass(frozen=True)
class TaskOutputs:
    losses: torch.Tensor       # [batch] one loss per example
    predictions: torch.Tensor  # [batch] (class id / value) or [masked positions] for MLM
    references: torch.Tensor   # same shape as predictions


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast for the loss; float64 stays float64."""
    return logits.float() if logits.element_size() < 4 else logits


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a batch that the encoder takes (not labels or bookkeeping)."""
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def masked_lm_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutputs:
    head = mlm_head(model)
    if head is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no masked-LM head; load it with AutoModelForMaskedLM"
        )
    hidden = encoder_of(model)(**model_inputs(batch)).last_hidden_state  # [batch, seq, hidden]
    labels = batch["labels"]  # [batch, seq], IGNORE_INDEX where not masked
    positions = labels != IGNORE_INDEX
    logits = head(hidden[positions])  # [masked, vocab]: the projection runs only here
    targets = labels[positions]  # [masked]
    token_losses = F.cross_entropy(_full_precision(logits), targets, reduction="none")
    example_of_token = positions.nonzero()[:, 0]  # [masked] example index of each position
    batch_size = labels.shape[0]
    sums = torch.zeros(batch_size, device=labels.device, dtype=token_losses.dtype)
    sums = sums.index_add(0, example_of_token, token_losses)
    counts = positions.sum(dim=1).clamp(min=1)
    return TaskOutputs(sums / counts, logits.argmax(dim=-1), targets)


def sequence_outputs(model: nn.Module, batch: dict[str, torch.Tensor], kind: str) -> TaskOutputs:
    logits = _full_precision(model(**model_inputs(batch)).logits)  # [batch, num_labels]
    labels = batch["labels"]
    if kind == REGRESSION:
        values = logits.squeeze(-1)
        targets = labels.to(values.dtype)
        return TaskOutputs((values - targets) ** 2, values, targets)
    losses = F.cross_entropy(logits, labels, reduction="none")
    return TaskOutputs(losses, logits.argmax(dim=-1), labels)


def task_outputs(model: nn.Module, batch: dict[str, torch.Tensor], kind: str) -> TaskOutputs:
    """Per-example losses and predictions of `model` on a batch of a task of `kind`."""
    if kind == MLM:
        return masked_lm_outputs(model, batch)
    if kind in (CLASSIFICATION, REGRESSION):
        return sequence_outputs(model, batch, kind)
    raise ValueError(f"unknown task kind {kind!r}")


def batches_on_device(
    batches: Iterable[dict[str, torch.Tensor]], device: torch.device, *, desc: str,
    progress: bool = False, total: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches moved to `device`, with a progress bar when asked."""
    for batch in tqdm(batches, total=total, disable=not progress, desc=desc, unit="batch"):
        yield {name: tensor.to(device) for name, tensor in batch.items()}


@contextmanager
def eval_mode(model: nn.Module):
    """Dropout off for the block (gradients and metrics of the deterministic model); the
    model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
