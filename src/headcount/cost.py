"""What heads and feed-forward neurons cost: multiply-adds per example and parameters.

Counted over the encoder's layers only (attention projections, attention scores and context,
feed-forward projections); embeddings and the task head are kept whole and reported apart.
Per example at sequence length T, hidden size d and head size d_h:

- one head: 4·T·d·d_h multiply-adds for its rows of the query, key and value projections and
  its columns of the output projection, plus 2·T²·d_h for its scores (QKᵀ) and context
  (softmax·V); parameters from the shapes of its family's per-head tensors (BERT:
  4·d·d_h + 3·d_h, the weights and the q/k/v biases of its rows; ModernBERT, without biases:
  4·d·d_h; DeBERTa adds its relative-position projections' rows);
- one feed-forward neuron: 2·T·d multiply-adds (its row of the intermediate projection and its
  column of the output projection), 3·T·d for a gated one (ModernBERT: its input and gate
  rows); parameters 2·d + 1 (gated: 3·d, or 3·d + 2 with biases).

What no unit owns stays: the output projections' biases (2·d per layer where they exist).
DeBERTa's relative-position terms (the position projections, applied to the 2k relative
embeddings, and the c2p/p2c scores, 2·T·2k·d_h per head) and MPNet's position bias are not
counted: the multiply-adds of DeBERTa heads are underestimated by that share. Multiply-adds of
the biases, softmax, activation and LayerNorm are left out (a few per cent at most). FLOPs
are reported as 2 x multiply-adds. ALBERT runs its one layer L times: its FLOPs count every
application, its parameters once.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from headcount.arch import attention_blocks, feed_forwards
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Prices


@dataclass(frozen=True)
class UnitCosts:
    """Multiply-adds per example (at one sequence length) and parameters of one unit."""

    head_macs: int
    neuron_macs: int
    head_parameters: int
    neuron_parameters: int


def unit_costs(model: nn.Module, seq_length: int) -> UnitCosts:
    """The cost of one head and one neuron of `model` at `seq_length` tokens.

    Example:
        >>> unit_costs(bert_base, 128).head_macs   # 4·128·768·64 + 2·128²·64
        27262976
    """
    layout = head_layout(model)
    hidden, width, length = layout.num_heads * layout.head_dim, layout.head_dim, seq_length
    attention, ffn = attention_blocks(model)[0], feed_forwards(model)[0]
    head_parameters = attention.output.out_features * width
    for tensor, parts, size in attention.per_head():
        rows = parts * size * width
        head_parameters += rows if isinstance(tensor, nn.Parameter) else \
            rows * (tensor.in_features + (tensor.bias is not None))
    rows = ffn.rows_per_neuron
    return UnitCosts(
        head_macs=4 * length * hidden * width + 2 * length * length * width,
        neuron_macs=(rows + 1) * length * hidden,
        head_parameters=head_parameters,
        neuron_parameters=rows * (ffn.intermediate.in_features
                                  + (ffn.intermediate.bias is not None))
        + ffn.output.out_features,
    )


@dataclass(frozen=True)
class EncoderCost:
    """The encoder layers' cost of a model as it is (pruned or not)."""

    macs: int               # per example, over every layer application
    parameters: int         # of the encoder layers' projections (each shared layer once)
    other_parameters: int   # embeddings, LayerNorms, pooler and task head: kept whole
    heads: int              # heads present, per layer application summed
    neurons: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _projection_parameters(model: nn.Module) -> int:
    parameters = [p for block in attention_blocks(model) for p in block.head_parameters()]
    parameters += [p for block in feed_forwards(model)
                   for linear in (block.intermediate, block.output) for p in linear.parameters()]
    return sum(p.numel() for p in parameters)


def encoder_cost(model: nn.Module, seq_length: int) -> EncoderCost:
    """Multiply-adds per example at `seq_length` and parameters of the encoder layers, from
    the heads and neurons present (`unit_costs` per unit); parameters counted from the
    modules' own shapes."""
    costs = unit_costs(model, seq_length)
    heads, neurons = head_layout(model), neuron_layout(model)
    applications = heads.num_layers // heads.num_distinct_layers
    head_count = heads.units_remaining * applications
    neuron_count = neurons.units_remaining * applications
    parameters = _projection_parameters(model)
    return EncoderCost(
        macs=head_count * costs.head_macs + neuron_count * costs.neuron_macs,
        parameters=parameters,
        other_parameters=sum(p.numel() for p in model.parameters()) - parameters,
        heads=head_count, neurons=neuron_count,
    )


def unit_prices(model: nn.Module, seq_length: int, kind: str) -> Prices:
    """The search's prices of heads and neurons under a FLOPs or parameter budget, relative
    to the model as it is (multiply-adds per example at `seq_length`, or parameters)."""
    costs, current = unit_costs(model, seq_length), encoder_cost(model, seq_length)
    if kind == "flops":
        return Prices(head=costs.head_macs, neuron=costs.neuron_macs, full=current.macs)
    # the output projections' biases stay whatever is pruned
    outputs = [block.output for block in attention_blocks(model) + feed_forwards(model)]
    fixed = sum(linear.bias.numel() for linear in outputs if linear.bias is not None)
    return Prices(head=costs.head_parameters, neuron=costs.neuron_parameters,
                  full=current.parameters, fixed=fixed)
