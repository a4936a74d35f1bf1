"""Attention probabilities: recorded per head, restricted to real tokens, and summarised as
the `entropy` and `confidence` importance estimators (drift reuses the recording).

`entropy`: how focused a head's attention is. For each real (non-padding) query token,
the entropy H (nats) of its attention distribution over the real keys (padding keys
dropped and the distribution renormalised), averaged over the real queries of each
example, then over examples. The score is the *focus* `ln(K) − H`, K the number of real
keys of the example: the KL divergence of the distribution from the uniform one over the
real keys (≥ 0). A head attending to one token scores ln K, a uniform head 0.
`attention_statistics` also gives the plain mean entropy.
`confidence` (Voita et al. 2019): the maximum attention weight of the head (over the real
keys, renormalised), averaged over the real queries of each example, then over examples.

entropy/confidence read attention probabilities, which only the eager attention
implementation computes: a model loaded with another one (SDPA, flash) is switched to eager
for the call with `set_attn_implementation` and switched back afterwards. ALBERT with
shared=True averages the statistic over its L layer applications (one row); shared=False
gives one row per application.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from headcount.arch import attention_blocks
from headcount.backoff import BatchBackoff
from headcount.choices import ATTENTION_ESTIMATORS, check_choice
from headcount.distributed import sum_across_processes
from headcount.errors import ConfigError, UnsupportedModelError
from headcount.forward import batches_on_device, eval_mode, model_device, model_inputs, task_outputs
from headcount.importance import Importance
from headcount.layouts import head_layout


@dataclass(frozen=True)
class AttentionStatistics:
    """Per-head attention statistics, `[rows, heads]` float64 (one row for ALBERT's shared
    heads, averaged over its applications); NaN for heads a pruned model no longer has.

    `entropy`: mean entropy (nats) over the real keys; `focus`: mean ln(K) − entropy;
    `confidence`: mean maximum attention weight. Each is averaged over the real query tokens
    of an example, then over examples. `mean_loss` is the task loss (NaN without a kind).
    """

    entropy: torch.Tensor
    focus: torch.Tensor
    confidence: torch.Tensor
    num_examples: int
    mean_loss: float
    shared: bool
    final_batch_size: int | None = None  # after out-of-memory back-off (headcount.backoff)

    def importance(self, estimator: str) -> Importance:
        """`focus` (estimator "entropy") or `confidence` as importance, removed heads 0."""
        check_choice("attention estimator", estimator, ATTENTION_ESTIMATORS)
        scores = self.focus if estimator == "entropy" else self.confidence
        raw = torch.nan_to_num(scores, nan=0.0).float()
        return Importance(raw, self.num_examples, self.mean_loss, self.shared)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the block with the eager attention implementation (the only one that computes
    attention probabilities); the previous implementation is restored afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError, ImportError) as error:
        raise UnsupportedModelError(
            f"cannot switch {type(model).__name__} to eager attention ({error}); "
            "load it with attn_implementation='eager'"
        ) from None
    try:
        if getattr(model.config, "_attn_implementation", None) != "eager":
            raise UnsupportedModelError(
                f"{type(model).__name__} did not switch to eager attention; "
                "load it with attn_implementation='eager'"
            )
        yield
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)


def _returned_on_request(model: nn.Module) -> bool:
    """Whether the attention modules return their probabilities only when asked: their
    forward takes `output_attentions` (DeBERTa, MPNet, RoFormer; transformers 5's BERT
    returns them always under eager attention)."""
    return any("output_attentions" in inspect.signature(block.attention.forward).parameters
               for block in attention_blocks(model))


@contextmanager
def returning_attention(model: nn.Module) -> Iterator[None]:
    """Under eager attention, have the model return attention probabilities for the block
    where its attention modules return them only when asked; the config's setting is
    restored afterwards. (Not for the others: transformers would install its own output
    hooks for good.)"""
    config = model.config
    previous = config.output_attentions
    if previous or getattr(config, "_attn_implementation", None) != "eager" \
            or not _returned_on_request(model):
        yield  # already returned, or not computed at all (the caller says so)
        return
    config.output_attentions = True
    try:
        yield
    finally:
        config.output_attentions = previous


class _Accumulator:
    """One batch's sums of (entropy, focus, confidence) per row and head, fed by a forward
    hook on every attention module; `real` marks the batch's real tokens. Each batch (or
    half of one, after running out of memory) starts from fresh sums, so a failed attempt
    leaves nothing behind."""

    def __init__(self, layout, shared: bool, device: torch.device):
        self.layout, self.shared, self.device = layout, shared, device
        self.sums = self.zeros()
        self.application = 0
        self.real: torch.Tensor | None = None  # [batch, seq] 0/1 float64
        self.missing: list[int] = []

    def zeros(self) -> torch.Tensor:
        # [statistic (entropy, focus, confidence), rows, heads]
        return torch.zeros(3, self.layout.score_rows(self.shared), self.layout.num_heads,
                           dtype=torch.float64, device=self.device)

    def start_batch(self, batch: dict[str, torch.Tensor]) -> None:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        self.real = (torch.ones_like(ids) if mask is None else mask).to(torch.float64)
        self.application = 0
        self.sums = self.zeros()

    def hook(self, module, args, output) -> None:
        application = self.application
        self.application += 1
        kept = list(self.layout.kept_in_application(application))
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not kept:
            return
        if weights is None:
            self.missing.append(application)
            return
        real = self.real
        probs = restricted_to_real_keys(weights, real)  # [batch, heads present, q, k]
        entropy = -torch.xlogy(probs, probs).sum(dim=-1)  # [batch, heads, queries]
        mean_entropy = per_example_mean(entropy, real)  # [batch, heads]
        log_keys = real.sum(dim=-1).clamp(min=1).log()[:, None]  # [batch, 1]
        stats = torch.stack([mean_entropy, log_keys - mean_entropy,
                             per_example_mean(probs.amax(dim=-1), real)])  # [3, batch, heads]
        if stats.shape[-1] != len(kept):
            raise RuntimeError(f"layer {application}: attention of {stats.shape[-1]} heads, "
                               f"{len(kept)} expected")
        self.sums[:, 0 if self.shared else application, kept] += stats.sum(dim=1)

    def check_batch(self, model: nn.Module) -> None:
        if self.application != self.layout.num_layers:
            raise RuntimeError(f"attention ran {self.application} times; "
                               f"expected {self.layout.num_layers}")
        if self.missing:
            raise UnsupportedModelError(
                f"{type(model).__name__} returned no attention probabilities (layer "
                f"{self.missing[0]}): load it with attn_implementation='eager'"
            )

    def means(self, sums: torch.Tensor, count: int) -> torch.Tensor:
        """`[3, rows, heads]` means of all batches' `sums`; NaN for heads the model no
        longer has. ALBERT shared: a row holds the sum over its applications, so they are
        averaged too."""
        layout = self.layout
        means = (sums / (count * (layout.num_layers if self.shared else 1))).cpu()
        for row in range(layout.score_rows(self.shared)):
            present = layout.kept[0] if self.shared else layout.kept_in_application(row)
            missing = sorted(set(range(layout.num_heads)) - set(present))
            means[:, row, missing] = float("nan")
        return means


def _statistics_sums(model: nn.Module, kind: str | None, sums: _Accumulator,
                     batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One batch's (statistics sums `[3, rows, heads]`, task loss sum, examples)."""
    sums.start_batch(batch)
    if kind is None:
        model.base_model(**model_inputs(batch))
        loss_sum = torch.zeros((), dtype=torch.float64, device=sums.device)
    else:
        loss_sum = task_outputs(model, batch, kind).losses.sum(dtype=torch.float64)
    sums.check_batch(model)
    return sums.sums, loss_sum, batch["input_ids"].shape[0]


def attention_statistics(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str | None = None,
    *,
    shared: bool | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> AttentionStatistics:
    """Mean attention entropy, focus and confidence of every head on `batches`.

    With a task `kind` the task's forward runs (and `mean_loss` is its loss); without, only
    the encoder. Padding never changes the result: padded queries are not averaged and
    padded keys are dropped from every distribution. A batch that runs out of memory is
    run again in halves (`headcount.backoff`).

    Example:
        >>> stats = attention_statistics(model, data.batches(32))
        >>> stats.entropy.shape, stats.confidence.max() <= 1
        (torch.Size([12, 12]), tensor(True))
    """
    layout = head_layout(model)
    shared = layout.resolve_shared(shared)
    device = model_device(model)
    backoff = backoff or BatchBackoff()
    accumulator = _Accumulator(layout, shared, device)
    step = partial(_statistics_sums, model, kind, accumulator)
    sums = accumulator.zeros()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    handles = []
    with eval_mode(model), eager_attention(model), returning_attention(model), \
            torch.inference_mode():
        try:
            handles = [block.attention.register_forward_hook(accumulator.hook)
                       for block in attention_blocks(model)]
            for batch in batches_on_device(batches, device, desc="attention",
                                           progress=progress, total=total):
                batch_sums, loss_sum, size = backoff.run(step, batch)
                sums += batch_sums
                total_loss += loss_sum
                count += size
        finally:
            for handle in handles:
                handle.remove()
    sum_across_processes(sums)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    means = accumulator.means(sums, count)
    mean_loss = float(total_loss) / count if kind is not None else float("nan")
    return AttentionStatistics(means[0], means[1], means[2], count, mean_loss, shared,
                               backoff.final_size)


@contextmanager
def recording_attention(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Attention probabilities `[batch, heads present, queries, keys]` of every attention
    application during the block, in order (ALBERT's shared module fires once per layer)."""
    recorded: list[torch.Tensor | None] = []

    def hook(module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        recorded.append(weights)

    handles = [block.attention.register_forward_hook(hook) for block in attention_blocks(model)]
    try:
        with returning_attention(model):
            yield recorded
    finally:
        for handle in handles:
            handle.remove()


def restricted_to_real_keys(attention: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Attention `[batch, heads, q, k]` restricted to real keys (`keys` `[batch, k]`, 0/1)
    and renormalised (a row whose mass is all on padding stays all zero). A padded query
    whose every key is masked (ModernBERT's local window over padding only) can hold NaN
    in float64: it counts as all zero too."""
    probs = torch.nan_to_num(attention.to(torch.float64), nan=0.0) * keys[:, None, None, :]
    total = probs.sum(dim=-1, keepdim=True)
    return probs / torch.where(total > 0, total, torch.ones_like(total))


def per_example_mean(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the real positions (last dim) of each example: `values` `[batch, ..., seq]`,
    `real` `[batch, seq]` 0/1 float64; returns `[batch, ...]`."""
    shape = (real.shape[0],) + (1,) * (values.dim() - 2) + (real.shape[1],)
    counts = real.sum(dim=-1).clamp(min=1).view(shape[:-1])
    return (values * real.view(shape)).sum(dim=-1) / counts
