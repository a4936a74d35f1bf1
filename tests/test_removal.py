"""Physical removal equals masking, for every architecture, and shrinks exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import FAMILIES, make_model, random_batch
from torch.testing import assert_close

from headcount.errors import ConfigError
from headcount.gates import gate_heads
from headcount.importance import head_importance
from headcount.layouts import head_layout
from headcount.removal import attention_parameter_count, remove_heads
from headcount.resize import NoHeads

# Layer 1 loses every head: the removed model must still match (output bias only).
HEADS = [(0, 1), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
ALBERT_HEADS = [(0, 1), (0, 3)]


def heads_for(family):
    return ALBERT_HEADS if family == "albert" else HEADS


def masked_outputs(model, batch, heads, head="classification"):
    layout = head_layout(model)
    mask = torch.ones(layout.num_distinct_layers, layout.num_heads)
    for layer, head_index in heads:
        mask[layer, head_index] = 0
    shared = layout.shared_layers
    with gate_heads(model, mask[0] if shared else mask, shared=shared):
        return model(**batch).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_removed_model_equals_masked_model(family, attn):
    model = make_model(family, attn=attn)
    batch = random_batch(model)
    heads = heads_for(family)
    expected = masked_outputs(model, batch, heads)
    pruned = remove_heads(copy.deepcopy(model), heads)
    assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "albert"])
def test_removed_mlm_model_equals_masked_model(family):
    model = make_model(family, head="mlm")
    batch = random_batch(model)
    heads = heads_for(family)
    expected = masked_outputs(model, batch, heads)
    pruned = remove_heads(copy.deepcopy(model), heads)
    assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_drops_by_exactly_the_removed_weights(family):
    model = make_model(family)
    layout = head_layout(model)
    hidden = layout.num_heads * layout.head_dim
    heads = heads_for(family)
    before = sum(p.numel() for p in model.parameters())
    attention_before = attention_parameter_count(model)
    remove_heads(model, heads)
    # per head: d_head rows of q, k, v (weights and biases) and d_head input columns of the
    # output projection (its bias stays)
    per_head = 3 * (layout.head_dim * hidden + layout.head_dim) + hidden * layout.head_dim
    assert before - sum(p.numel() for p in model.parameters()) == per_head * len(heads)
    assert attention_before - attention_parameter_count(model) == per_head * len(heads)


def test_layout_records_the_kept_heads_and_removal_is_incremental():
    model = make_model("bert")
    batch = random_batch(model)
    remove_heads(model, [(0, 1)])
    assert head_layout(model).kept == ((0, 2, 3), (0, 1, 2, 3))
    remove_heads(model, [(0, 3), (0, 1), (1, 2)])  # (0, 1) is already gone: ignored
    layout = head_layout(model)
    assert layout.kept == ((0, 2), (0, 1, 3))
    assert layout.heads_remaining == 5
    reference = make_model("bert")
    assert_close(model(**batch).logits,
                 masked_outputs(reference, batch, [(0, 1), (0, 3), (1, 2)]),
                 rtol=1e-5, atol=1e-5)


def test_a_layer_without_heads_is_replaced_by_a_stand_in():
    model = make_model("distilbert")
    remove_heads(model, [(1, h) for h in range(4)])
    attention = model.distilbert.transformer.layer[1].attention
    assert isinstance(attention, NoHeads)
    assert attention.q_lin.weight.shape == (0, 32)
    assert head_layout(model).kept[1] == ()


def test_gates_on_a_pruned_model_index_original_heads():
    model = make_model("bert")
    batch = random_batch(model)
    pruned = remove_heads(copy.deepcopy(model), [(0, 0), (1, 2)])
    mask = torch.ones(2, 4)
    mask[0, 3] = 0  # an original index; in the pruned weights it is position 2
    with gate_heads(pruned, mask):
        gated = pruned(**batch).logits
    assert_close(gated, masked_outputs(model, batch, [(0, 0), (1, 2), (0, 3)]),
                 rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_importance_of_a_pruned_model_equals_that_of_the_masked_model(family):
    model = make_model(family, dtype=torch.float64)
    batch = random_batch(model, 4, 8)
    batch["labels"] = torch.tensor([0, 1, 1, 0])
    heads = [(0, 1)] if family == "albert" else [(0, 1), (1, 0), (1, 3)]
    pruned = remove_heads(copy.deepcopy(model), heads)
    from_pruned = head_importance(pruned, [batch], "classification").raw
    layout = head_layout(model)
    mask = torch.ones(layout.num_distinct_layers, layout.num_heads, dtype=torch.float64)
    for layer, head in heads:
        mask[layer, head] = 0
    with gate_heads(model, mask[0] if layout.shared_layers else mask,
                    shared=layout.shared_layers):
        from_masked = head_importance(model, [batch], "classification").raw
    for layer, head in heads:
        assert from_pruned[layer, head] == 0
        assert from_masked[layer, head] == 0
    assert_close(from_pruned, from_masked, rtol=1e-6, atol=1e-9)


def test_removing_every_albert_head_is_refused():
    model = make_model("albert")
    with pytest.raises(ConfigError, match="every head of ALBERT"):
        remove_heads(model, [(0, h) for h in range(4)])


def test_removing_a_head_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match=r"head \(2, 0\) does not exist"):
        remove_heads(make_model("bert"), [(2, 0)])
