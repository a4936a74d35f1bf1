"""Michel et al.'s head importance, exact per example, at batch speed; and its normalisation.

    I[l, h] = mean over examples x of |∂L(x)/∂ξ[l, h]|   at ξ ≡ 1

Feed-forward neurons get the same estimator and normalisations, with ξ[l, j] the gate on
neuron j's activation; heads and neurons come from the same backward pass.

The absolute value is taken per example. A gate of shape [batch, layers, heads] gives each
example its own ξ, so one backward pass of the summed per-example losses yields every
example's own gradient. (A single gate shared by the batch would give |Σ_x ∂L/∂ξ|, a
different and biased quantity.) Parameters are frozen during the pass: no weight gradients
are computed or stored, which makes the pass cheaper than a plain training step.

For ALBERT, whose one layer runs L times, a head's gate is shared by all applications, so
the gradient is Σ_l ∂L/∂ξ_h^(l) before the absolute value: I_h = mean |Σ_l ∂L(x)/∂ξ_h^(l)|.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from headcount.backoff import BatchBackoff
from headcount.choices import NORMALIZATIONS, UNITS, check_choice
from headcount.distributed import sum_across_processes
from headcount.errors import ConfigError
from headcount.forward import batches_on_device, eval_mode, model_device, task_outputs
from headcount.gates import gate_units, gated
from headcount.layouts import UNIT_KINDS, head_layout, unit_layout


@dataclass(frozen=True)
class Importance:
    """Raw importance (the per-example mean of |∂L/∂ξ|), `[layers, units]` (heads or
    neurons); one row for ALBERT's shared units. `mean_loss` is the task loss of the ungated
    model."""

    raw: torch.Tensor
    num_examples: int
    mean_loss: float
    shared: bool

    def normalized(self, method: str) -> torch.Tensor:
        return normalize(self.raw, method)


def check_normalization(method: str) -> None:
    check_choice("normalisation", method, NORMALIZATIONS)


def normalize(scores: torch.Tensor, method: str) -> torch.Tensor:
    """Per-layer normalisation Ī[l,h] = I[l,h] / Norm(I[l,1..H]), Norm ∈ {l1, l2, none}.

    A layer whose scores are all zero stays zero (rather than 0/0).

    Example:
        >>> normalize(torch.tensor([[1.0, 3.0]]), "l1")
        tensor([[0.2500, 0.7500]])
    """
    check_normalization(method)
    if method == "none":
        return scores.clone()
    order = 1 if method == "l1" else 2
    norms = torch.linalg.vector_norm(scores, ord=order, dim=-1, keepdim=True)
    return torch.where(norms > 0, scores / torch.where(norms > 0, norms, 1), 0)


@contextmanager
def frozen_parameters(model: nn.Module):
    """Turn off parameter gradients for the block (restoring each flag afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def unit_kinds(units: str) -> tuple[str, ...]:
    """`--units heads|neurons|both` as the kinds of units it names."""
    check_choice("units", units, UNITS)
    return UNIT_KINDS if units == "both" else (units,)


def _gate_shape(layout, shared: bool) -> tuple[int, ...]:
    return (layout.num_units,) if shared else (layout.num_layers, layout.num_units)


def batch_gate_gradients(model: nn.Module, batch: dict[str, torch.Tensor], kind: str,
                         kinds: tuple[str, ...], shared: bool
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every example's own gradient of its loss with respect to each unit's gate at 1, for
    each unit kind (`{kind: [batch, rows, units]}`, rows 1 when `shared`), from one backward
    pass; and the per-example losses `[batch]`. The model's parameters must be frozen (see
    `frozen_parameters`) so that no weight gradients are computed."""
    device = model_device(model)
    size = batch["input_ids"].shape[0]
    gates = {unit: torch.ones((size, *_gate_shape(unit_layout(model, unit), shared)),
                              device=device, requires_grad=True) for unit in kinds}
    with ExitStack() as stack:
        for unit, gate in gates.items():
            stack.enter_context(gate_units(gated(model, unit), gate, shared=shared))
        losses = task_outputs(model, batch, kind).losses  # [batch]
    gradients = torch.autograd.grad(losses.sum(), list(gates.values()))
    rows = {unit: gradient.view(size, -1, gradient.shape[-1])
            for unit, gradient in zip(kinds, gradients, strict=True)}
    return rows, losses.detach()


def _abs_sums(model: nn.Module, kind: str, units: tuple[str, ...], shared: bool,
              batch: dict[str, torch.Tensor]) -> tuple:
    """One batch's additive parts: per kind Σ_x |∂L(x)/∂ξ|, the loss sum, the count."""
    gradients, losses = batch_gate_gradients(model, batch, kind, units, shared)
    sums = tuple(gradients[unit].abs().sum(dim=0, dtype=torch.float64) for unit in units)
    return (*sums, losses.sum(dtype=torch.float64), losses.shape[0])


def unit_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    units: tuple[str, ...] = ("heads",),
    shared: bool | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> dict[str, Importance]:
    """Exact per-example importance of each kind of unit in `units` ("heads", "neurons"),
    all from one backward pass per batch; `{kind: Importance}` with `raw` of shape
    `[layers, units]` (one row when `shared`). A batch that runs out of memory is run again
    in halves (`backoff`, see `headcount.backoff`).

    Example:
        >>> both = unit_importance(model, data.batches(32), data.kind,
        ...                        units=("heads", "neurons"))
        >>> both["neurons"].raw.shape   # MiniLM: 6 layers of 1536 neurons
        torch.Size([6, 1536])
    """
    shared = head_layout(model).resolve_shared(shared)
    device = model_device(model)
    backoff = backoff or BatchBackoff()
    step = partial(_abs_sums, model, kind, tuple(units), shared)
    # Sums stay on the device: no host synchronisation per batch.
    layouts = {unit: unit_layout(model, unit) for unit in units}
    sums = [torch.zeros(layout.score_rows(shared), layout.num_units, dtype=torch.float64,
                        device=device) for layout in layouts.values()]
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with eval_mode(model), frozen_parameters(model):
        for batch in batches_on_device(batches, device, desc="importance", progress=progress,
                                       total=total):
            *parts, loss_sum, size = backoff.run(step, batch)
            for total_abs, part in zip(sums, parts, strict=True):
                total_abs += part
            total_loss += loss_sum
            count += size
    # Under torch.distributed each process saw its own share of the examples: add them up.
    for total_abs in sums:
        sum_across_processes(total_abs)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    mean_loss = float(total_loss) / count
    return {unit: Importance((total_abs / count).float().cpu(), count, mean_loss, shared)
            for unit, total_abs in zip(units, sums, strict=True)}


def head_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    shared: bool | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> Importance:
    """Exact per-example head importance of `model` on `batches` of a task of `kind`.

    `shared` (default: True for ALBERT) gives one score per head shared by all layer
    applications; `shared=False` on ALBERT scores each application separately. Under
    torch.distributed, each process passes its own share of the examples (see
    `distributed.shard`) and the result covers all of them.

    Example:
        >>> data = prepare_data(task, tokenizer, model.config, split="train", fraction=0.2)
        >>> imp = head_importance(model, data.batches(32), data.kind)
        >>> imp.normalized("l1").shape
        torch.Size([12, 12])
    """
    return unit_importance(model, batches, kind, units=("heads",), shared=shared,
                           progress=progress, total=total, backoff=backoff)["heads"]
