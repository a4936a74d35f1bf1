"""Michel et al.'s estimator checked against independent computations."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    FAMILIES,
    classification_batch,
    in_float64,
    make_model,
    mlm_batch,
    random_batch,
)
from torch.testing import assert_close

from headcount.errors import ConfigError
from headcount.forward import task_outputs
from headcount.gates import gate_heads
from headcount.importance import head_importance, normalize
from headcount.layouts import head_layout


def split_examples(batch):
    """The batch's examples one at a time, padding removed."""
    singles = []
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        single = {}
        for name, tensor in batch.items():
            value = tensor[row : row + 1]
            single[name] = value[:, :length] if value.dim() == 2 else value
        singles.append(single)
    return singles


def loss_with_gate(model, batch, kind, gate, shared=False):
    with gate_heads(model, gate, shared=shared):
        return task_outputs(model, batch, kind).losses.sum()


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_gradient_matches_finite_differences(family, monkeypatch):
    in_float64(monkeypatch, family)
    model = make_model(family, dtype=torch.float64)
    batch = classification_batch(model, batch_size=1, pad_last=0)
    layout = head_layout(model)
    gate = torch.ones(layout.num_layers, layout.num_heads, dtype=torch.float64,
                      requires_grad=True)
    (analytic,) = torch.autograd.grad(loss_with_gate(model, batch, "classification", gate), gate)
    eps = 1e-6
    numeric = torch.zeros_like(analytic)
    with torch.no_grad():
        for layer in range(layout.num_layers):
            for head in range(layout.num_heads):
                up, down = torch.ones_like(gate), torch.ones_like(gate)
                up[layer, head] += eps
                down[layer, head] -= eps
                numeric[layer, head] = (
                    loss_with_gate(model, batch, "classification", up)
                    - loss_with_gate(model, batch, "classification", down)
                ) / (2 * eps)
    assert analytic.abs().max() > 1e-4  # the check must be able to fail
    assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def one_at_a_time(model, batch, kind, shared=False):
    """Reference: mean over examples of |∂L(x)/∂ξ|, one unpadded example per pass."""
    layout = head_layout(model)
    shape = (layout.num_heads,) if shared else (layout.num_layers, layout.num_heads)
    total = torch.zeros(shape, dtype=torch.float64)
    singles = split_examples(batch)
    for single in singles:
        gate = torch.ones(shape, dtype=model.dtype, requires_grad=True)
        (gradient,) = torch.autograd.grad(loss_with_gate(model, single, kind, gate, shared), gate)
        total += gradient.abs()
    mean = total / len(singles)
    return mean.reshape(1, -1) if shared else mean


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_per_example_importance_equals_one_example_at_a_time(family):
    model = make_model(family, dtype=torch.float64)
    batch = classification_batch(model, batch_size=5)
    halves = [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]
    result = head_importance(model, halves, "classification")
    expected = one_at_a_time(model, batch, "classification", shared=family == "albert")
    assert result.num_examples == 5
    assert_close(result.raw.double(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "deberta", "deberta-v2",
                                    "modernbert", "mpnet"])
def test_masked_lm_importance_equals_one_example_at_a_time(family):
    model = make_model(family, head="mlm", dtype=torch.float64)
    batch = mlm_batch(model)
    result = head_importance(model, [batch], "mlm")
    expected = one_at_a_time(model, batch, "mlm", shared=family == "albert")
    assert_close(result.raw.double(), expected, rtol=1e-4, atol=1e-7)


def test_regression_importance_uses_squared_error():
    model = make_model("bert", num_labels=1, dtype=torch.float64)
    batch = random_batch(model, 4, 7, pad_last=2)
    batch["labels"] = torch.tensor([0.5, 4.0, 2.5, 1.0], dtype=torch.float64)
    result = head_importance(model, [batch], "regression")
    assert_close(result.raw.double(), one_at_a_time(model, batch, "regression"),
                 rtol=1e-4, atol=1e-7)
    prediction = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    expected = float(((prediction.detach() - batch["labels"]) ** 2).mean())
    assert result.mean_loss == pytest.approx(expected)


def test_a_gate_shared_by_the_batch_is_a_different_quantity():
    """|Σ_x ∂L/∂ξ| (one gate for the batch) is not Σ_x |∂L/∂ξ|: why gates are per example."""
    model = make_model("bert", dtype=torch.float64)
    batch = classification_batch(model, batch_size=6)
    gate = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    (shared_gradient,) = torch.autograd.grad(
        loss_with_gate(model, batch, "classification", gate), gate)
    exact = head_importance(model, [batch], "classification").raw.double()
    assert (shared_gradient.abs() / 6 <= exact + 1e-9).all()  # triangle inequality
    assert not torch.allclose(shared_gradient.abs() / 6, exact, rtol=1e-3)


def test_albert_shared_score_is_the_sum_over_applications_before_the_absolute_value():
    model = make_model("albert", dtype=torch.float64)
    batch = classification_batch(model, batch_size=4)
    layout = head_layout(model)
    gate = torch.ones(4, layout.num_layers, layout.num_heads, dtype=torch.float64,
                      requires_grad=True)
    (per_application,) = torch.autograd.grad(
        loss_with_gate(model, batch, "classification", gate), gate)  # [batch, L, H]
    expected = per_application.sum(dim=1).abs().mean(dim=0)  # mean_x |Σ_l ∂L/∂ξ_h^(l)|
    shared = head_importance(model, [batch], "classification")
    assert shared.shared and shared.raw.shape == (1, layout.num_heads)
    assert_close(shared.raw[0].double(), expected, rtol=1e-5, atol=1e-9)
    per_layer = head_importance(model, [batch], "classification", shared=False)
    assert per_layer.raw.shape == (layout.num_layers, layout.num_heads)
    assert_close(per_layer.raw.double(), per_application.abs().mean(dim=0), rtol=1e-5,
                 atol=1e-9)
    # Σ_l |·| >= |Σ_l ·|, and strictly here: the two ALBERT definitions differ.
    assert (per_layer.raw.sum(0) >= shared.raw[0] - 1e-6).all()


def test_importance_leaves_the_model_as_it_was():
    model = make_model("bert")
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    head_importance(model, [classification_batch(model)], "classification")
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_importance_does_not_depend_on_batching_or_order():
    model = make_model("roberta", dtype=torch.float64)
    batch = classification_batch(model, batch_size=6)
    whole = head_importance(model, [batch], "classification").raw
    reversed_singles = list(reversed(split_examples(batch)))
    assert_close(head_importance(model, reversed_singles, "classification").raw, whole,
                 rtol=1e-5, atol=1e-8)


def test_normalisations_on_a_hand_computed_case():
    raw = torch.tensor([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]])
    assert_close(normalize(raw, "l1"), torch.tensor(
        [[1 / 8, 3 / 8, 0.0, 4 / 8], [0.0, 0.0, 0.0, 0.0], [3 / 7, 4 / 7, 0.0, 0.0]]))
    assert_close(normalize(raw, "l2"), torch.tensor(
        [[1 / 26**0.5, 3 / 26**0.5, 0.0, 4 / 26**0.5], [0.0, 0.0, 0.0, 0.0],
         [0.6, 0.8, 0.0, 0.0]]))
    assert_close(normalize(raw, "none"), raw)
    with pytest.raises(ConfigError, match="Unknown normalisation 'l3'. Allowed: l1, l2, none"):
        normalize(raw, "l3")
