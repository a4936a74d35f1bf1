"""More head-importance estimators beside Michel et al.'s gradient, all on the same scale
convention: **higher score = more important** (pruning removes the lowest first).

- `gradient`: `importance.head_importance`, mean over examples of |∂L(x)/∂ξ[l,h]|.
- `ablation` (ground truth): the loss change when that one head is switched off,

      I[l,h] = mean over examples x of ( L(x | ξ[l,h] = 0) − L(x) ),

  which can be negative (removing the head helps). It costs one forward per head and
  example; they are batched: the batch of B examples is repeated K times (B' = K·B rows)
  with a per-example gate `[B', layers, heads]` whose replica k has head k's gate at 0, so
  one forward evaluates K heads. The unablated loss L(x) comes from one plain forward per
  batch. Everything runs under `torch.inference_mode`; the differences L(x|·) − L(x) are
  taken per example and summed in float64.
  ALBERT (shared=True, its default): head h is switched off in every layer application at
  once, H evaluations; `shared=False` ablates one application at a time (L·H).
  **Prefix reuse** (models with distinct layers): switching off a head of layer l changes
  nothing below layer l, so the plain pass records every layer's output, and the passes for
  layer l's heads (K of layer l's heads at a time) replay layers 0..l−1 from that record
  (the embeddings still run; the replayed layers do no work) and compute only layers
  l..L−1 and the task head: Σ_l H·(L−l) layer passes per batch instead of H·L·L (21/36 of
  the layer work for 6 layers, about half for deep models). ALBERT, whose one module runs
  L times, takes full forwards.
- `entropy`: how focused a head's attention is. For each real (non-padding) query token,
  the entropy H (nats) of its attention distribution over the real keys (padding keys
  dropped and the distribution renormalised), averaged over the real queries of each
  example, then over examples. The score is the *focus* `ln(K) − H`, K the number of real
  keys of the example: the KL divergence of the distribution from the uniform one over the
  real keys (≥ 0). A head attending to one token scores ln K, a uniform head 0.
  `attention_statistics` also gives the plain mean entropy.
- `confidence` (Voita et al. 2019): the maximum attention weight of the head (over the real
  keys, renormalised), averaged over the real queries of each example, then over examples.
- `magnitude`: data-free: the Frobenius norm of the head's own weights, its rows of the
  query, key and value weights and its input columns of the output projection (biases
  excluded): sqrt of the sum of squares of the four slices. It reads no data:
  `num_examples` is 0 and `mean_loss` NaN; `batches` may be None.

entropy/confidence read attention probabilities, which only the eager attention
implementation computes: a model loaded with another one (SDPA, flash) is switched to eager
for the call with `set_attn_implementation` and switched back afterwards. ALBERT with
shared=True averages the statistic over its L layer applications (one row); shared=False
gives one row per application.

Heads a physically pruned model no longer has score 0 under every estimator (as with the
gradient). Under torch.distributed each process passes its own share of the examples and
the per-process sums are added up, as `head_importance` does.

**Choosing K (heads per pass) for ablation** when `heads_per_pass=None`, per batch:
K = floor(budget / (B · bytes per example)), clamped to [1, heads per layer] (with prefix
reuse one forward holds heads of one layer only; ALBERT: [1, heads]). The bytes per
example of one inference forward are estimated from the padded sequence length S, hidden
size D, intermediate size I, heads H and the element size e of the model's dtype, as
e · S · (8·D + 2·I + 3·H·S) (hidden states, q/k/v, context and FFN activations, and three
[H, S, S] score tensors alive at once, a conservative overcount), plus for masked LM
12 · V bytes per masked position (float32 vocabulary logits and their log-softmax).
The budget is 128 MiB on CPU (`CPU_BUDGET_BYTES`: K = 2-5 for MiniLM on batches of 32
short sentences) and half of the free device memory on CUDA (`torch.cuda.mem_get_info`
plus what the caching allocator holds unused). K does not reduce FLOPs; on a CPU it only
trades memory for GEMM shape. Quiet 2-core CPU, MiniLM, 64 SST-2 sentences, prefix reuse
(benchmarks/bench_ablation.py): K=1 15.3 s / 108 MiB, K=4 15.6 s / 185 MiB, K=12 16.7 s /
387 MiB, so the CPU budget keeps K small. (With other processes taking half of the CPU,
K=12 once ran 2.5x faster than K=1: time-slicing favours fewer, larger calls.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from headcount.arch import HeadLayout, attention_blocks, head_layout, layer_stack
from headcount.choices import ATTENTION_ESTIMATORS, ESTIMATORS, check_choice
from headcount.distributed import sum_across_processes
from headcount.drift import _per_example_mean, _restricted
from headcount.errors import ConfigError, UnsupportedModelError
from headcount.forward import batches_on_device, eval_mode, task_outputs
from headcount.gates import gate_heads
from headcount.importance import Importance, head_importance
from headcount.tasks.mlm import IGNORE_INDEX

CPU_BUDGET_BYTES = 128 << 20
CUDA_BUDGET_SHARE = 0.5

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_estimator(estimator: str) -> None:
    check_choice("estimator", estimator, ESTIMATORS)


def _check_shared(layout: HeadLayout, shared: bool | None) -> bool:
    if shared is None:
        return layout.shared_layers
    if shared and not layout.shared_layers:
        raise ConfigError(
            f"shared=True needs a model whose layers share weights (ALBERT); "
            f"'{layout.family}' has {layout.num_layers} distinct layers"
        )
    return shared


def _rows(layout: HeadLayout, shared: bool) -> int:
    return 1 if shared else layout.num_layers


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- entry point


def estimate_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]] | None,
    kind: str,
    estimator: str = "gradient",
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """Head importance of `model` on `batches` of a task of `kind` by `estimator` (one of
    `ESTIMATORS`); higher = more important. See the module docstring for each definition.

    `shared` (default: True for ALBERT) gives one score per shared head; `heads_per_pass`
    is the ablation's K (None: chosen from a memory budget).

    Example:
        >>> imp = estimate_importance(model, data.batches(32), data.kind, "ablation")
        >>> imp.raw.shape  # [layers, heads]; the loss increase when each head is removed
        torch.Size([12, 12])
    """
    result, _ = estimate_for_record(model, batches, kind, estimator, shared=shared,
                                    heads_per_pass=heads_per_pass, progress=progress,
                                    total=total)
    return result


def estimate_for_record(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]] | None,
    kind: str,
    estimator: str = "gradient",
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> tuple[Importance, dict]:
    """`estimate_importance`, plus the fields a `scores.json` record gains: `entropy_nats`
    (entropy/confidence: mean entropy per head, None for removed heads) or `mean_loss`
    None (magnitude, which reads no data)."""
    check_estimator(estimator)
    if heads_per_pass is not None and heads_per_pass < 1:
        raise ConfigError(f"--heads-per-pass {heads_per_pass} must be at least 1")
    if estimator != "magnitude" and batches is None:
        raise ConfigError(f"the {estimator} estimator needs batches of examples")
    if estimator == "gradient":
        _check_shared(head_layout(model), shared)
        return head_importance(model, batches, kind, shared=shared, progress=progress,
                               total=total), {}
    if estimator == "ablation":
        return ablation_importance(model, batches, kind, shared=shared,
                                   heads_per_pass=heads_per_pass, progress=progress,
                                   total=total), {}
    if estimator == "magnitude":
        return magnitude_importance(model, shared=shared), {"mean_loss": None}
    stats = attention_statistics(model, batches, kind, shared=shared, progress=progress,
                                 total=total)
    entropy = [[None if math.isnan(v) else v for v in row] for row in stats.entropy.tolist()]
    return stats.importance(estimator), {"entropy_nats": entropy}


# --------------------------------------------------------------------------- ablation


def activation_bytes_per_example(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Estimated peak activation memory of one example of `batch` in an inference forward
    (the rule is in the module docstring)."""
    config = model.config
    layout = head_layout(model)
    hidden = getattr(config, "hidden_size", None) or config.dim
    inner = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", 4 * hidden)
    size, seq = batch["input_ids"].shape
    element = next(model.parameters()).element_size()
    total = element * seq * (8 * hidden + 2 * inner + 3 * layout.num_heads * seq)
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2:  # masked LM: logits at masked positions
        masked = int((labels != IGNORE_INDEX).sum())
        total += math.ceil(masked / max(size, 1)) * config.vocab_size * 12
    return int(total)


def memory_budget(device: torch.device) -> int:
    """Bytes the ablation's replicated batch may take (module docstring)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(CUDA_BUDGET_SHARE * (free + cached))
    return CPU_BUDGET_BYTES


def auto_heads_per_pass(model: nn.Module, batch: dict[str, torch.Tensor], heads: int) -> int:
    """K for one batch: as many replicas of the batch as the memory budget holds, 1..heads
    (`ablation_importance` passes the most heads one forward can evaluate: one layer's).
    On a CPU, K saves per-call overhead only (the FLOPs are the same); see the module
    docstring for what was measured.

    Example:
        >>> auto_heads_per_pass(model, batch, heads=144)
        24
    """
    size = batch["input_ids"].shape[0]
    per_replica = max(1, size * activation_bytes_per_example(model, batch))
    fits = memory_budget(batch["input_ids"].device) // per_replica
    return int(max(1, min(heads, fits)))


def _repeat(batch: dict[str, torch.Tensor], times: int) -> dict[str, torch.Tensor]:
    """Every tensor of the batch stacked `times` times along the batch dimension."""
    return {name: tensor.repeat(times, *([1] * (tensor.dim() - 1)))
            for name, tensor in batch.items()}


def _candidates(layout: HeadLayout, shared: bool) -> list[tuple[int, int]]:
    """(row, head) of every head present: the gate positions to switch off one by one."""
    if shared:
        return [(0, head) for head in layout.kept[0]]
    return [(layer, head) for layer in range(layout.num_layers)
            for head in layout.kept_in_application(layer)]


def _layer_stack(model: nn.Module, layout: HeadLayout) -> nn.ModuleList | None:
    """The encoder's distinct layer modules in call order (BERT, RoBERTa, XLM-R, ELECTRA:
    `encoder.layer`; DistilBERT: `transformer.layer`), or None where prefix reuse does not
    apply (ALBERT's one shared module, a layout not recognised): those take full forwards."""
    stack = layer_stack(model)
    if not isinstance(stack, nn.ModuleList) or len(stack) != layout.num_layers:
        return None
    return stack


def _repeat_output(output, size: int, times: int):
    """A layer's output with every tensor whose dim 0 is the batch repeated `times` times,
    in the same structure (tensor, tuple/list with None entries, or a ModelOutput)."""
    if isinstance(output, torch.Tensor):
        if output.dim() > 0 and output.shape[0] == size:
            return output.repeat(times, *([1] * (output.dim() - 1)))
        return output
    if isinstance(output, ModelOutput):
        return type(output)(**{name: _repeat_output(value, size, times)
                               for name, value in output.items()})
    if isinstance(output, (tuple, list)):
        return type(output)(_repeat_output(value, size, times) for value in output)
    return output


class _Replay(nn.Module):
    """Stands in for an encoder layer below the ablated head: ignores its input and returns
    the layer's output recorded in the plain pass, repeated for the K replicas. Exact: a
    gate on a higher layer cannot change what a lower layer computes."""

    def __init__(self, output, size: int, times: int):
        super().__init__()
        self.output, self.size, self.times = output, size, times

    def forward(self, *args, **kwargs):
        return _repeat_output(self.output, self.size, self.times)


def _recording_pass(model: nn.Module, stack: nn.ModuleList, batch: dict[str, torch.Tensor],
                    kind: str) -> tuple[torch.Tensor, list]:
    """The plain pass's per-example losses and the output of every layer of `stack`."""
    outputs: list = [None] * len(stack)

    def recorder(index: int):
        def hook(module, args, output):
            outputs[index] = output
        return hook

    handles = [layer.register_forward_hook(recorder(index)) for index, layer in enumerate(stack)]
    try:
        losses = task_outputs(model, batch, kind).losses
    finally:
        for handle in handles:
            handle.remove()
    if any(output is None for output in outputs):
        raise RuntimeError("the encoder did not call every layer of its stack once")
    return losses, outputs


@contextmanager
def _replaying(stack: nn.ModuleList | None, outputs: list, size: int,
               times: int) -> Iterator[None]:
    """Layers 0..len(outputs)-1 of `stack` replaced by replays of `outputs` for the block
    (no outputs: nothing replaced); the real layers are put back on exit or error."""
    originals = [stack[index] for index in range(len(outputs))]
    try:
        for index, output in enumerate(outputs):
            stack[index] = _Replay(output, size, times)
        yield
    finally:
        for index, layer in enumerate(originals):
            stack[index] = layer


def ablation_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """Mean loss increase when each head alone is switched off, K heads per forward.

    Example:
        >>> ablation_importance(model, data.batches(32), data.kind, heads_per_pass=8).raw
    """
    layout = head_layout(model)
    shared = _check_shared(layout, shared)
    rows = _rows(layout, shared)
    device = _device(model)
    gate_shape = (layout.num_heads,) if shared else (layout.num_layers, layout.num_heads)
    candidates = _candidates(layout, shared)
    stack = None if shared else _layer_stack(model, layout)
    # Groups of heads evaluated from the same first layer: with prefix reuse, each layer's
    # heads (its layers below are replayed); otherwise all heads from layer 0.
    if stack is None:
        groups = [(0, candidates)] if candidates else []
    else:
        groups = [(layer, [c for c in candidates if c[0] == layer])
                  for layer in range(layout.num_layers)]
        groups = [(layer, group) for layer, group in groups if group]
    widest = max((len(group) for _, group in groups), default=1)
    flat = {(row, head): row * layout.num_heads + head for row, head in candidates}
    delta = torch.zeros(rows * layout.num_heads, dtype=torch.float64, device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with eval_mode(model), torch.inference_mode():
        for batch in batches_on_device(batches, device, desc="ablation", progress=progress,
                                       total=total):
            size = batch["input_ids"].shape[0]
            if stack is None:
                base, recorded = task_outputs(model, batch, kind).losses, []
            else:
                base, recorded = _recording_pass(model, stack, batch, kind)
            base = base.to(torch.float64)  # [batch]
            total_loss += base.sum()
            count += size
            step = heads_per_pass or auto_heads_per_pass(model, batch, widest)
            for first, group in groups:
                for start in range(0, len(group), step):
                    chunk = group[start:start + step]
                    k = len(chunk)
                    gate = torch.ones((k, size, *gate_shape), device=device)
                    for replica, (row, head) in enumerate(chunk):
                        if shared:
                            gate[replica, :, head] = 0
                        else:
                            gate[replica, :, row, head] = 0
                    with (gate_heads(model, gate.view(k * size, *gate_shape), shared=shared),
                          _replaying(stack, recorded[:first], size, k)):
                        losses = task_outputs(model, _repeat(batch, k), kind).losses  # [k*batch]
                    # Per-example differences first: the means are close and would cancel.
                    change = (losses.to(torch.float64).view(k, size) - base).sum(dim=1)  # [k]
                    index = torch.tensor([flat[c] for c in chunk], device=device)
                    delta.index_add_(0, index, change)
    sum_across_processes(delta)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    raw = (delta / count).float().cpu().view(rows, layout.num_heads)
    return Importance(raw, count, float(total_loss) / count, shared)


# --------------------------------------------------------------------------- attention


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


def attention_statistics(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str | None = None,
    *,
    shared: bool | None = None,
    progress: bool = False,
    total: int | None = None,
) -> AttentionStatistics:
    """Mean attention entropy, focus and confidence of every head on `batches`.

    With a task `kind` the task's forward runs (and `mean_loss` is its loss); without, only
    the encoder. Padding never changes the result: padded queries are not averaged and
    padded keys are dropped from every distribution.

    Example:
        >>> stats = attention_statistics(model, data.batches(32))
        >>> stats.entropy.shape, stats.confidence.max() <= 1
        (torch.Size([12, 12]), tensor(True))
    """
    layout = head_layout(model)
    shared = _check_shared(layout, shared)
    rows = _rows(layout, shared)
    device = _device(model)
    # [statistic (entropy, focus, confidence), rows, heads]
    sums = torch.zeros(3, rows, layout.num_heads, dtype=torch.float64, device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state: dict = {"application": 0, "real": None, "missing": []}

    def hook(module, args, output):
        application = state["application"]
        state["application"] += 1
        kept = list(layout.kept_in_application(application))
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not kept:
            return
        if weights is None:
            state["missing"].append(application)
            return
        real = state["real"]  # [batch, seq] 0/1 float64
        probs = _restricted(weights, real)  # [batch, heads present, queries, keys]
        entropy = -torch.xlogy(probs, probs).sum(dim=-1)  # [batch, heads, queries]
        confidence = probs.amax(dim=-1)
        mean_entropy = _per_example_mean(entropy, real)  # [batch, heads]
        log_keys = real.sum(dim=-1).clamp(min=1).log()[:, None]  # [batch, 1]
        stats = torch.stack([mean_entropy, log_keys - mean_entropy,
                             _per_example_mean(confidence, real)])  # [3, batch, heads]
        if stats.shape[-1] != len(kept):
            raise RuntimeError(f"layer {application}: attention of {stats.shape[-1]} heads, "
                               f"{len(kept)} expected")
        sums[:, 0 if shared else application, kept] += stats.sum(dim=1)

    handles = []
    with eval_mode(model), eager_attention(model), torch.inference_mode():
        try:
            handles = [block.attention.register_forward_hook(hook)
                       for block in attention_blocks(model)]
            for batch in batches_on_device(batches, device, desc="attention",
                                           progress=progress, total=total):
                ids = batch["input_ids"]
                mask = batch.get("attention_mask")
                state["real"] = (torch.ones_like(ids) if mask is None else mask).to(
                    torch.float64)
                state["application"] = 0
                if kind is None:
                    model.base_model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch})
                else:
                    total_loss += task_outputs(model, batch, kind).losses.sum(
                        dtype=torch.float64)
                if state["application"] != layout.num_layers:
                    raise RuntimeError(f"attention ran {state['application']} times; "
                                       f"expected {layout.num_layers}")
                if state["missing"]:
                    raise UnsupportedModelError(
                        f"{type(model).__name__} returned no attention probabilities (layer "
                        f"{state['missing'][0]}): load it with attn_implementation='eager'"
                    )
                count += ids.shape[0]
        finally:
            for handle in handles:
                handle.remove()
    sum_across_processes(sums)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    # ALBERT shared: the row holds the sum over its applications; average them.
    means = (sums / (count * (layout.num_layers if shared else 1))).cpu()
    for row in range(rows):
        present = layout.kept[0] if shared else layout.kept_in_application(row)
        missing = sorted(set(range(layout.num_heads)) - set(present))
        means[:, row, missing] = float("nan")
    mean_loss = float(total_loss) / count if kind is not None else float("nan")
    return AttentionStatistics(means[0], means[1], means[2], count, mean_loss, shared)


# --------------------------------------------------------------------------- magnitude


def magnitude_importance(model: nn.Module, *, shared: bool | None = None) -> Importance:
    """Frobenius norm of each head's query/key/value rows and output-projection columns
    (biases excluded). Data-free: `num_examples` 0, `mean_loss` NaN. ALBERT with
    shared=False repeats its one row of weights for each application.

    Example:
        >>> magnitude_importance(model).raw.shape
        torch.Size([12, 12])
    """
    layout = head_layout(model)
    shared = _check_shared(layout, shared)
    blocks = attention_blocks(model)
    distinct = torch.zeros(layout.num_distinct_layers, layout.num_heads, dtype=torch.float64)
    d = layout.head_dim
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            kept = list(layout.kept[layer])
            if not kept:
                continue
            squares = torch.zeros(len(kept), dtype=torch.float64)
            for linear in (block.query, block.key, block.value):
                rows = linear.weight.detach().to("cpu", torch.float64)  # [kept * d, in]
                squares += rows.view(len(kept), d, -1).pow(2).sum(dim=(1, 2))
            columns = block.output.weight.detach().to("cpu", torch.float64)  # [out, kept * d]
            squares += columns.view(columns.shape[0], len(kept), d).pow(2).sum(dim=(0, 2))
            distinct[layer, kept] = squares.sqrt()
    raw = distinct if shared or not layout.shared_layers else distinct.expand(
        layout.num_layers, -1).clone()
    return Importance(raw.float(), 0, float("nan"), shared)
