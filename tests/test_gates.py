"""Gating invariants for every architecture and attention implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, make_config, make_model, random_batch
from torch.testing import assert_close
from transformers import GPT2Config, GPT2Model

from headcount.arch import attention_blocks
from headcount.errors import UnsupportedModelError
from headcount.gates import gate_heads
from headcount.layouts import head_layout

IMPLEMENTATIONS = ("sdpa", "eager")


def logits(model, batch):
    return model(**batch).logits


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_gate_is_a_no_op(family, attn):
    model = make_model(family, attn=attn)
    batch = random_batch(model)
    layout = head_layout(model)
    reference = logits(model, batch)
    ones = torch.ones(layout.num_layers, layout.num_heads)
    with gate_heads(model, ones):
        assert_close(logits(model, batch), reference, rtol=0, atol=0)
    with gate_heads(model, torch.ones(3, layout.num_layers, layout.num_heads)):
        assert_close(logits(model, batch), reference, rtol=0, atol=0)
    if layout.shared_layers:
        with gate_heads(model, torch.ones(layout.num_heads), shared=True):
            assert_close(logits(model, batch), reference, rtol=0, atol=0)


def _zero_value_rows(block, head: int, head_dim: int) -> None:
    """Zero head `head`'s value rows (weights and biases) by hand: in the value projection,
    in ModernBERT's Wqkv (its value third) or in DeBERTa's in_proj (q, k, v rows per head
    interleaved; the value bias is a separate vector)."""
    paths, attention, d = block.paths, block.attention, head_dim
    heads = block.output.in_features // d
    if paths.get("fused_qkv"):
        linear, start = getattr(attention, paths["fused_qkv"]), 2 * heads * d + head * d
    elif paths.get("interleaved_qkv"):
        linear, start = getattr(attention, paths["interleaved_qkv"]), head * 3 * d + 2 * d
    else:
        linear, start = getattr(attention, paths["head_rows"][2]), head * d
    rows = slice(start, start + d)
    with torch.no_grad():
        linear.weight[rows] = 0
        if linear.bias is not None:
            linear.bias[rows] = 0
        if "v_bias" in paths.get("head_vectors", ()):
            attention.v_bias[head * d:(head + 1) * d] = 0


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "albert"])
def test_zero_gate_equals_zeroing_the_value_projection(family, attn):
    """softmax(QK)·0 = 0: a head whose value rows are zero contributes exactly nothing."""
    model = make_model(family, attn=attn)
    batch = random_batch(model)
    layout = head_layout(model)
    layer, head = 1, 2
    mask = torch.ones(layout.num_layers, layout.num_heads)
    mask[layer, head] = 0
    with gate_heads(model, mask):
        gated = logits(model, batch)
    _zero_value_rows(attention_blocks(model)[layer], head, layout.head_dim)
    by_hand = logits(model, batch)
    assert_close(gated, by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(gated, make_model(family, attn=attn)(**batch).logits, atol=1e-4)


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
def test_albert_shared_zero_gate_equals_zeroing_the_shared_value_projection(attn):
    model = make_model("albert", attn=attn)
    batch = random_batch(model)
    layout = head_layout(model)
    mask = torch.ones(layout.num_heads)
    mask[1] = 0
    with gate_heads(model, mask, shared=True):
        gated = logits(model, batch)
    per_application = torch.ones(layout.num_layers, layout.num_heads)
    per_application[:, 1] = 0
    with gate_heads(model, per_application):
        assert_close(logits(model, batch), gated, rtol=0, atol=0)
    _zero_value_rows(attention_blocks(model)[0], 1, layout.head_dim)
    assert_close(gated, logits(model, batch), rtol=1e-5, atol=1e-6)


def test_albert_gates_each_layer_application_separately():
    """Switching a head off in application 0 only differs from switching it off in all."""
    model = make_model("albert")
    batch = random_batch(model)
    layout = head_layout(model)
    assert layout.num_layers == 3 and layout.shared_layers
    only_first = torch.ones(layout.num_layers, layout.num_heads)
    only_first[0, 1] = 0
    with gate_heads(model, only_first):
        first = logits(model, batch)
    everywhere = torch.ones(layout.num_heads)
    everywhere[1] = 0
    with gate_heads(model, everywhere, shared=True):
        all_layers = logits(model, batch)
    assert not torch.allclose(first, all_layers, atol=1e-5)
    # The counter restarts with every forward: a second pass gives the same result.
    with gate_heads(model, only_first):
        assert_close(logits(model, batch), first, rtol=0, atol=0)
        assert_close(logits(model, batch), first, rtol=0, atol=0)


def test_per_example_gate_gates_each_example_independently():
    model = make_model("bert")
    batch = random_batch(model, batch_size=2, pad_last=0)
    layout = head_layout(model)
    gate = torch.ones(2, layout.num_layers, layout.num_heads)
    gate[1, 0, 3] = 0
    with gate_heads(model, gate):
        both = logits(model, batch)
    mask = torch.ones(layout.num_layers, layout.num_heads)
    mask[0, 3] = 0
    with gate_heads(model, mask):
        masked = logits(model, batch)
    assert_close(both[0], logits(model, batch)[0], rtol=1e-5, atol=1e-6)
    assert_close(both[1], masked[1], rtol=1e-5, atol=1e-6)


def test_boolean_mask_is_accepted():
    model = make_model("bert")
    batch = random_batch(model)
    layout = head_layout(model)
    mask = torch.ones(layout.num_layers, layout.num_heads, dtype=torch.bool)
    mask[1, 1] = False
    with gate_heads(model, mask):
        from_bool = logits(model, batch)
    with gate_heads(model, mask.float()):
        assert_close(logits(model, batch), from_bool, rtol=0, atol=0)


def _hook_count(model) -> int:
    return sum(len(module._forward_pre_hooks) for module in model.modules())


def test_hooks_are_removed_on_exit_and_on_exception():
    model = make_model("albert")
    batch = random_batch(model)
    reference = logits(model, batch)
    before = _hook_count(model)
    zeros = torch.zeros(head_layout(model).num_layers, head_layout(model).num_heads)
    with pytest.raises(RuntimeError, match="boom"), gate_heads(model, zeros):
        assert _hook_count(model) > before
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    assert_close(logits(model, batch), reference, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape, shared", [((3, 4), False), ((2,), False), ((2, 2, 4, 1), False), ((2, 4), True)]
)
def test_wrong_gate_shapes_are_refused(shape, shared):
    model = make_model("bert")
    with pytest.raises(ValueError, match="gate|shared=True"):
        with gate_heads(model, torch.ones(shape), shared=shared):
            pass


def test_per_example_gate_of_the_wrong_batch_size_is_refused():
    model = make_model("bert")
    gate = torch.ones(5, 2, 4)
    with pytest.raises(ValueError, match="batch size 5"), gate_heads(model, gate):
        logits(model, random_batch(model, batch_size=3))


def test_unsupported_architecture_lists_the_supported_ones():
    model = GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16))
    with pytest.raises(UnsupportedModelError, match="bert, roberta, xlm-roberta, electra"):
        head_layout(model)


def test_albert_with_several_layer_groups_is_refused():
    from transformers import AlbertModel

    model = AlbertModel(make_config("albert", num_hidden_groups=3))
    with pytest.raises(UnsupportedModelError, match="num_hidden_groups=3"):
        head_layout(model)


def test_gate_dtype_follows_the_model():
    """A float32 gate on a float64 model must not break the output projection."""
    model = make_model("roberta", dtype=torch.float64)
    batch = random_batch(model)
    with gate_heads(model, torch.ones(2, 4)):
        assert logits(model, batch).dtype == torch.float64
