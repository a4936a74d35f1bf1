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


def weights_per_head(family: str, d: int, hidden: int, **overrides) -> int:
    """Parameters one head owns, counted by hand from each family's modeling code."""
    if family == "deberta":
        # in_proj: 3 d rows (no bias); q_bias, v_bias: d each; pos_proj: d rows (no bias);
        # pos_q_proj: d rows with bias; the output projection's d columns
        return 3 * d * hidden + 2 * d + d * hidden + (d * hidden + d) + hidden * d
    # d rows of q, k, v (weights and biases; ModernBERT's Wqkv thirds) and d input columns
    # of the output projection (its bias stays)
    per_head = 3 * (d * hidden + d) + hidden * d
    if family == "deberta-v2" and not overrides.get("share_att_key", True):
        per_head += 2 * (d * hidden + d)  # pos_key_proj and pos_query_proj rows
    if family == "modernbert" and not overrides.get("attention_bias", True):
        per_head -= 3 * d
    return per_head


@pytest.mark.parametrize("family, overrides", [(f, {}) for f in FAMILIES] + [
    ("deberta-v2", {"share_att_key": False}), ("modernbert", {"attention_bias": False})])
def test_parameter_count_drops_by_exactly_the_removed_weights(family, overrides):
    model = make_model(family, **overrides)
    layout = head_layout(model)
    hidden = layout.num_heads * layout.head_dim
    heads = heads_for(family)
    before = sum(p.numel() for p in model.parameters())
    attention_before = attention_parameter_count(model)
    remove_heads(model, heads)
    per_head = weights_per_head(family, layout.head_dim, hidden, **overrides)
    assert before - sum(p.numel() for p in model.parameters()) == per_head * len(heads)
    assert attention_before - attention_parameter_count(model) == per_head * len(heads)


@pytest.mark.parametrize("overrides", [
    {"share_att_key": False},  # DeBERTa-v2 (xlarge): separate relative-position projections
    {"share_att_key": False, "pos_att_type": ["c2p"]},  # only one of them
    {"position_buckets": -1, "norm_rel_ebd": "none"},  # positions without buckets
])
def test_deberta_v2_variants_removed_equal_masked(overrides):
    model = make_model("deberta-v2", **overrides)
    batch = random_batch(model)
    expected = masked_outputs(model, batch, HEADS)
    pruned = remove_heads(copy.deepcopy(model), HEADS)
    assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, model(**batch).logits, atol=1e-4)


@pytest.mark.parametrize("family", ["deberta", "deberta-v2", "modernbert", "mpnet"])
def test_removed_masked_lm_of_the_new_families_equals_masked_model(family):
    model = make_model(family, head="mlm")
    batch = random_batch(model)
    expected = masked_outputs(model, batch, HEADS)
    pruned = remove_heads(copy.deepcopy(model), HEADS)
    assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)


def test_mpnet_layers_keep_their_own_columns_of_the_shared_position_bias():
    """MPNet's relative-position table has one column per head, shared by every layer: a
    pruned layer must add head h's bias to head h, not to whichever head now sits at its
    position. Removing heads in two steps composes the selections."""
    model = make_model("mpnet")
    batch = random_batch(model)
    expected = masked_outputs(model, batch, [(0, 0), (0, 2), (1, 1)])
    once = remove_heads(copy.deepcopy(model), [(0, 0), (0, 2), (1, 1)])
    twice = remove_heads(remove_heads(copy.deepcopy(model), [(0, 0)]), [(0, 2), (1, 1)])
    for pruned in (once, twice):
        assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    assert pruned.mpnet.encoder.layer[0].attention.attn.headcount_bias_heads == [1, 3]
    # the bias table itself is shared and whole
    assert pruned.mpnet.encoder.relative_attention_bias.weight.shape[1] == 4


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
