"""The Fisher information of the head and neuron masks (Kwon et al. 2022).

    F = E_x[ g(x) g(x)ᵀ ],   g(x) = ∂L(x)/∂m at m = 1

for the masks m of every head and feed-forward neuron. Its diagonal scores units for the
mask search; per layer, the block of F over that layer's heads (or neurons) drives the mask
rearrangement. With per-example gates (`importance.batch_gate_gradients`), every example's
own g(x) comes from one backward pass per batch, which gives the exact F. The public code
of Kwon et al. sums the gradients over a batch before squaring, E_batch[(Σ_x g(x))(Σ_x g(x))ᵀ],
a different quantity; `per_example=False` computes that one, for comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from headcount.distributed import sum_across_processes
from headcount.errors import ConfigError
from headcount.forward import batches_on_device, eval_mode, model_device
from headcount.importance import batch_gate_gradients, frozen_parameters
from headcount.layouts import head_layout, unit_layout


@dataclass(frozen=True)
class MaskFisher:
    """The Fisher information of the masks of each kind of unit ("heads", "neurons").

    `diagonal[kind]`: `[layers, units]`; `blocks[kind]`: `[layers, units, units]`, the block
    of F within each layer. Means over `count` examples (batches with `per_example=False`).
    """

    diagonal: dict[str, torch.Tensor]
    blocks: dict[str, torch.Tensor]
    count: int
    per_example: bool
    mean_loss: float


def mask_fisher(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    units: tuple[str, ...] = ("heads", "neurons"),
    per_example: bool = True,
    progress: bool = False,
    total: int | None = None,
) -> MaskFisher:
    """The mask Fisher of `model` on `batches` of a task of `kind`, for each kind in `units`.

    Example:
        >>> fisher = mask_fisher(model, data.batches(32), data.kind)
        >>> fisher.diagonal["neurons"].shape, fisher.blocks["heads"].shape
        (torch.Size([6, 1536]), torch.Size([6, 12, 12]))
    """
    layout = head_layout(model)
    if layout.shared_layers:
        raise ConfigError("the mask Fisher needs one mask per layer; ALBERT's layers share "
                          "one set of heads and neurons")
    device = model_device(model)
    # Blocks in float32 (a layer's neuron block is units² numbers: 9.4 M for BERT-base); the
    # diagonal, which the search sums, in float64.
    blocks, diagonal = {}, {}
    for unit in units:
        sizes = unit_layout(model, unit)
        blocks[unit] = torch.zeros(sizes.num_layers, sizes.num_units, sizes.num_units,
                                   device=device)
        diagonal[unit] = torch.zeros(sizes.num_layers, sizes.num_units, dtype=torch.float64,
                                     device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = examples = 0
    with eval_mode(model), frozen_parameters(model):
        for batch in batches_on_device(batches, device, desc="mask Fisher", progress=progress,
                                       total=total):
            gradients, losses = batch_gate_gradients(model, batch, kind, units, shared=False)
            for unit, g in gradients.items():  # [batch, layers, units]
                if not per_example:
                    g = g.sum(dim=0, keepdim=True)
                blocks[unit] += torch.einsum("blu,blv->luv", g.float(), g.float())
                diagonal[unit] += g.to(torch.float64).pow(2).sum(dim=0)
            total_loss += losses.sum(dtype=torch.float64)
            examples += losses.shape[0]
            count += losses.shape[0] if per_example else 1
    for tensor in (*blocks.values(), *diagonal.values(), total_loss):
        sum_across_processes(tensor)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    examples = int(sum_across_processes(torch.tensor([examples], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to compute the mask Fisher on")
    return MaskFisher({unit: (d / count).cpu() for unit, d in diagonal.items()},
                      {unit: (b / count).cpu() for unit, b in blocks.items()},
                      count, per_example, float(total_loss) / examples)
