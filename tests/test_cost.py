"""The cost model of heads and neurons against a hand count and torch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from torch.utils.flop_counter import FlopCounterMode

from headcount.cost import encoder_cost, unit_costs
from headcount.removal import remove_units

# Tiny configs: hidden d = 32, 4 heads of d_h = 8, 37 neurons, 2 layers (ALBERT: 3 runs).
T = 16


def test_unit_costs_by_hand():
    costs = unit_costs(make_model("bert"), T)
    assert costs.head_macs == 4 * T * 32 * 8 + 2 * T * T * 8 == 20480
    assert costs.neuron_macs == 2 * T * 32 == 1024
    assert costs.head_parameters == 4 * 32 * 8 + 3 * 8 == 1048
    assert costs.neuron_parameters == 2 * 32 + 1 == 65


def test_encoder_cost_by_hand_unpruned_and_pruned():
    model = make_model("bert")
    full = encoder_cost(model, T)
    # per layer: 4 heads x 20480 + 37 neurons x 1024 multiply-adds
    assert full.macs == 2 * (4 * 20480 + 37 * 1024) == 239616 and full.flops == 479232
    # per layer: q, k, v, o (32x32 + 32 each) and the feed-forward (32x37 + 37, 37x32 + 32)
    assert full.parameters == 2 * (4 * (32 * 32 + 32) + (32 * 37 + 37) + (37 * 32 + 32))
    total = sum(p.numel() for p in model.parameters())
    assert full.parameters + full.other_parameters == total
    remove_units(model, {"heads": [(0, 1), (1, 0), (1, 2)], "neurons": [(0, 4), (1, 9)]})
    pruned = encoder_cost(model, T)
    assert full.macs - pruned.macs == 3 * 20480 + 2 * 1024
    assert full.parameters - pruned.parameters == 3 * 1048 + 2 * 65
    assert (pruned.heads, pruned.neurons) == (5, 72)


def test_unit_costs_of_a_gated_feed_forward_by_hand():
    """ModernBERT: a neuron is a row of Wi's input half, one of its gate half and a column
    of Wo: 3·T·d multiply-adds; its parameters 3·d, plus the two Wi biases when the
    projections have biases (the tiny config's; released checkpoints have none)."""
    with_biases = unit_costs(make_model("modernbert"), T)
    assert with_biases.neuron_macs == 3 * T * 32 == 1536
    assert with_biases.neuron_parameters == 3 * 32 + 2
    assert with_biases.head_parameters == 4 * 32 * 8 + 3 * 8  # Wqkv rows with biases, Wo
    released = unit_costs(make_model("modernbert", attention_bias=False, mlp_bias=False), T)
    assert (released.neuron_parameters, released.head_parameters) == (3 * 32, 4 * 32 * 8)
    assert released.head_macs == 4 * T * 32 * 8 + 2 * T * T * 8
    model = make_model("modernbert", attention_bias=False, mlp_bias=False)
    full = encoder_cost(model, T)
    assert full.parameters == 2 * (32 * 96 + 32 * 32 + 32 * 74 + 37 * 32)
    remove_units(model, {"heads": [(0, 1)], "neurons": [(1, 4), (1, 9)]})
    assert full.parameters - encoder_cost(model, T).parameters == 4 * 32 * 8 + 2 * 3 * 32


def counted_flops(model, family) -> int:
    """torch's FLOP counter over the encoder's layers alone (eager attention)."""
    ids = torch.randint(5, 100, (1, T))
    with torch.no_grad():
        if family == "modernbert":  # its embeddings and norms do no matrix products
            with FlopCounterMode(display=False) as counter:
                model.base_model(ids)
            return counter.get_total_flops()
        hidden = model.base_model.embeddings(ids)
        with FlopCounterMode(display=False) as counter:
            if family == "distilbert":
                model.base_model.transformer(hidden, attn_mask=torch.ones(1, T))
            else:
                model.base_model.encoder(hidden)
    return counter.get_total_flops()


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert", "modernbert", "mpnet"])
def test_encoder_flops_equal_torchs_flop_counter(family):
    model = make_model(family, attn="eager")
    units = {"heads": [(0, 1)], "neurons": [(0, 3), (0, 5)]}
    # ALBERT's encoder first maps the embeddings (24 wide) to the hidden size: that matrix
    # belongs to the embeddings, which the cost model leaves out.
    mapping = 2 * T * 24 * 32 if family == "albert" else 0
    for step in (None, units):
        if step:
            remove_units(model, step)
        assert counted_flops(model, family) == encoder_cost(model, T).flops + mapping
