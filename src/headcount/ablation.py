"""The `ablation` estimator (ground truth): the loss change when each head alone is switched
off,

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
from functools import partial

import torch
from torch import nn
from transformers.utils import ModelOutput

from headcount.arch import layer_stack
from headcount.backoff import BatchBackoff
from headcount.distributed import sum_across_processes
from headcount.errors import ConfigError
from headcount.forward import batches_on_device, eval_mode, model_device, task_outputs
from headcount.gates import gate_heads
from headcount.importance import Importance
from headcount.layouts import HeadLayout, head_layout
from headcount.tasks.mlm import IGNORE_INDEX

CPU_BUDGET_BYTES = 128 << 20
CUDA_BUDGET_SHARE = 0.5


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


def replayable_layers(model: nn.Module, layout: HeadLayout) -> nn.ModuleList | None:
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


class Replay(nn.Module):
    """Stands in for an encoder layer below the ablated head: ignores its input and returns
    the layer's output recorded in the plain pass, repeated for the K replicas. Exact: a
    gate on a higher layer cannot change what a lower layer computes. Attributes the
    encoder reads from its layers (ModernBERT's `attention_type`) are the replaced layer's."""

    def __init__(self, output, size: int, times: int, layer: nn.Module):
        super().__init__()
        self.output, self.size, self.times = output, size, times
        self.__dict__["replaced"] = layer  # not a submodule: its weights are not used

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["replaced"], name)

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
            stack[index] = Replay(output, size, times, originals[index])
        yield
    finally:
        for index, layer in enumerate(originals):
            stack[index] = layer


def ablation_groups(layout: HeadLayout, shared: bool,
                    stack: nn.ModuleList | None) -> list[tuple[int, list[tuple[int, int]]]]:
    """(first layer computed, heads) of the forwards: with prefix reuse each layer's heads
    (the layers below are replayed); otherwise all heads from layer 0."""
    candidates = _candidates(layout, shared)
    if stack is None:
        return [(0, candidates)] if candidates else []
    groups = [(layer, [c for c in candidates if c[0] == layer])
              for layer in range(layout.num_layers)]
    return [(layer, group) for layer, group in groups if group]


def _ablated_losses(model: nn.Module, batch: dict[str, torch.Tensor], kind: str,
                    chunk: list[tuple[int, int]], shared: bool, replay) -> torch.Tensor:
    """Per-example losses `[k, batch]` with head chunk[i] switched off in replica i."""
    layout = head_layout(model)
    size, k = batch["input_ids"].shape[0], len(chunk)
    gate_shape = (layout.num_heads,) if shared else (layout.num_layers, layout.num_heads)
    gate = torch.ones((k, size, *gate_shape), device=model_device(model))
    for replica, (row, head) in enumerate(chunk):
        if shared:
            gate[replica, :, head] = 0
        else:
            gate[replica, :, row, head] = 0
    with gate_heads(model, gate.view(k * size, *gate_shape), shared=shared), replay:
        losses = task_outputs(model, _repeat(batch, k), kind).losses  # [k*batch]
    return losses.to(torch.float64).view(k, size)


@dataclass(frozen=True)
class AblationPlan:
    """What every batch of an ablation runs: the forwards (`groups`, see `ablation_groups`)
    over the model's layer `stack` (None: full forwards), K = `heads_per_pass` heads each."""

    layout: HeadLayout
    shared: bool
    stack: nn.ModuleList | None
    groups: list[tuple[int, list[tuple[int, int]]]]
    heads_per_pass: int


def _ablation_sums(model: nn.Module, kind: str, plan: AblationPlan,
                   batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One batch's (summed loss change per head `[rows * heads]`, summed plain loss,
    examples), all float64 on the model's device."""
    layout, stack = plan.layout, plan.stack
    device = model_device(model)
    size = batch["input_ids"].shape[0]
    if stack is None:
        base, recorded = task_outputs(model, batch, kind).losses, []
    else:
        base, recorded = _recording_pass(model, stack, batch, kind)
    base = base.to(torch.float64)  # [batch]
    delta = torch.zeros(layout.score_rows(plan.shared) * layout.num_heads, dtype=torch.float64,
                        device=device)
    step = plan.heads_per_pass
    for first, group in plan.groups:
        for start in range(0, len(group), step):
            chunk = group[start:start + step]
            replay = _replaying(stack, recorded[:first], size, len(chunk))
            losses = _ablated_losses(model, batch, kind, chunk, plan.shared, replay)
            # Per-example differences first: the means are close and would cancel.
            change = (losses - base).sum(dim=1)  # [k]
            index = torch.tensor([row * layout.num_heads + head for row, head in chunk],
                                 device=device)
            delta.index_add_(0, index, change)
    return delta, base.sum(), size


def ablation_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> Importance:
    """Mean loss increase when each head alone is switched off, K heads per forward. A
    batch that runs out of memory is run again in halves (`headcount.backoff`); K stays
    the one chosen for the whole batch, so the halves need less memory.

    Example:
        >>> ablation_importance(model, data.batches(32), data.kind, heads_per_pass=8).raw
    """
    layout = head_layout(model)
    shared = layout.resolve_shared(shared)
    device = model_device(model)
    backoff = backoff or BatchBackoff()
    stack = None if shared else replayable_layers(model, layout)
    groups = ablation_groups(layout, shared, stack)
    widest = max((len(group) for _, group in groups), default=1)
    delta = torch.zeros(layout.score_rows(shared) * layout.num_heads, dtype=torch.float64,
                        device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with eval_mode(model), torch.inference_mode():
        for batch in batches_on_device(batches, device, desc="ablation", progress=progress,
                                       total=total):
            plan = AblationPlan(layout, shared, stack, groups,
                                heads_per_pass or auto_heads_per_pass(model, batch, widest))
            batch_delta, loss_sum, size = backoff.run(partial(_ablation_sums, model, kind, plan),
                                                      batch)
            delta += batch_delta
            total_loss += loss_sum
            count += size
    sum_across_processes(delta)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    raw = (delta / count).float().cpu().view(layout.score_rows(shared), layout.num_heads)
    return Importance(raw, count, float(total_loss) / count, shared)
