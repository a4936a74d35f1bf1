"""Feed-forward neurons as units: gates, exact per-example importance, physical removal."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import FAMILIES, classification_batch, in_float64, make_model, random_batch
from torch.testing import assert_close

from headcount.arch import feed_forwards
from headcount.errors import ConfigError
from headcount.gates import gate_heads, gate_neurons
from headcount.importance import frozen_parameters, head_importance, unit_importance
from headcount.layouts import head_layout, neuron_layout
from headcount.removal import feed_forward_parameter_count, remove_neurons, remove_units

NEURONS = 37  # the tiny configs' intermediate size


def neuron_mask(model, neurons):
    layout = neuron_layout(model)
    mask = torch.ones(layout.num_distinct_layers, layout.num_neurons)
    for layer, index in neurons:
        mask[layer, index] = 0
    return (mask[0], True) if layout.shared_layers else (mask, False)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_neuron_gate_is_a_no_op(family, attn):
    model = make_model(family, attn=attn)
    batch = random_batch(model)
    expected = model(**batch).logits
    layout = neuron_layout(model)
    ones = torch.ones(layout.num_layers, layout.num_neurons)
    with gate_neurons(model, ones):
        assert_close(model(**batch).logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_neuron_gate_equals_zeroing_its_output_column_by_hand(family):
    model = make_model(family)
    batch = random_batch(model)
    neurons = [(0, 3), (0, 30)] if family == "albert" else [(0, 3), (1, 0), (1, 36)]
    mask, shared = neuron_mask(model, neurons)
    with gate_neurons(model, mask, shared=shared):
        gated = model(**batch).logits
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        blocks = feed_forwards(by_hand)
        for layer, index in neurons:
            blocks[layer].output.weight[:, index] = 0
    assert_close(by_hand(**batch).logits, gated, rtol=1e-5, atol=1e-6)


def test_albert_neuron_gates_each_layer_application_separately():
    model = make_model("albert")
    batch = random_batch(model)
    gate = torch.ones(3, NEURONS)
    gate[1, 5] = 0  # only the second of ALBERT's three applications
    with gate_neurons(model, gate):
        once = model(**batch).logits
    shared = torch.ones(NEURONS)
    shared[5] = 0
    with gate_neurons(model, shared, shared=True):
        everywhere = model(**batch).logits
    assert not torch.allclose(once, everywhere)


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_gate_gradients_match_finite_differences(family, monkeypatch):
    in_float64(monkeypatch, family)
    model = make_model(family, dtype=torch.float64)
    batch = classification_batch(model)
    layout = neuron_layout(model)
    shape = (layout.num_layers, layout.num_neurons)

    def loss_at(gate):
        with gate_neurons(model, gate):
            out = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return torch.nn.functional.cross_entropy(out, batch["labels"])

    gate = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(loss_at(gate), gate)
    eps = 1e-6
    for layer, index in [(0, 0), (1, 17), (layout.num_layers - 1, 36)]:
        up, down = torch.ones(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)
        up[layer, index] += eps
        down[layer, index] -= eps
        numeric = (loss_at(up) - loss_at(down)) / (2 * eps)
        assert float(gradient[layer, index]) == pytest.approx(float(numeric.detach()), rel=1e-4,
                                                             abs=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_neuron_importance_equals_a_one_example_loop(family):
    model = make_model(family, dtype=torch.float64)
    batch = classification_batch(model, batch_size=5)
    got = unit_importance(model, [batch], "classification", units=("neurons",))["neurons"]
    layout = neuron_layout(model)
    shared = layout.shared_layers
    shape = (layout.num_neurons,) if shared else (layout.num_layers, layout.num_neurons)
    total = torch.zeros(shape, dtype=torch.float64)
    with frozen_parameters(model):
        for i in range(5):
            one = {k: v[i:i + 1] for k, v in batch.items()}
            gate = torch.ones(shape, dtype=torch.float64, requires_grad=True)
            with gate_neurons(model, gate, shared=shared):
                logits = model(**{k: v for k, v in one.items() if k != "labels"}).logits
            loss = torch.nn.functional.cross_entropy(logits, one["labels"])
            (gradient,) = torch.autograd.grad(loss, gate)
            total += gradient.abs()
    expected = (total / 5).reshape(1, -1) if shared else total / 5
    assert_close(got.raw.double(), expected, rtol=1e-5, atol=1e-9)
    assert got.num_examples == 5


def test_heads_and_neurons_from_one_pass_equal_each_alone():
    model = make_model("bert", dtype=torch.float64)
    batch = classification_batch(model)
    both = unit_importance(model, [batch], "classification", units=("heads", "neurons"))
    heads = head_importance(model, [batch], "classification")
    neurons = unit_importance(model, [batch], "classification", units=("neurons",))
    assert_close(both["heads"].raw, heads.raw)
    assert_close(both["neurons"].raw, neurons["neurons"].raw)
    assert both["heads"].mean_loss == pytest.approx(heads.mean_loss)


def random_units(model, seed):
    """Random heads and neurons per layer, layer 1 left with no neuron and no head."""
    generator = torch.Generator().manual_seed(seed)
    heads, neurons = head_layout(model), neuron_layout(model)
    chosen = {"heads": [], "neurons": []}
    for layer in range(neurons.num_distinct_layers):
        if layer == 1:
            chosen["heads"] += [(1, h) for h in range(heads.num_heads)]
            chosen["neurons"] += [(1, n) for n in range(neurons.num_neurons)]
            continue
        for n in torch.randperm(NEURONS, generator=generator)[:int(seed % 7 + 9)].tolist():
            chosen["neurons"].append((layer, n))
        keep = heads.num_heads - 1 if heads.shared_layers else heads.num_heads
        for h in torch.randperm(heads.num_heads, generator=generator)[:keep - 1].tolist():
            chosen["heads"].append((layer, h))
    return chosen


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_removed_heads_and_neurons_equal_masked_ones(family, seed):
    model = make_model(family)
    batch = random_batch(model)
    units = random_units(model, seed)
    heads = head_layout(model)
    head_gate = torch.ones(heads.num_distinct_layers, heads.num_heads)
    for layer, head in units["heads"]:
        head_gate[layer, head] = 0
    mask, shared = neuron_mask(model, units["neurons"])
    with gate_heads(model, head_gate[0] if shared else head_gate, shared=shared), \
            gate_neurons(model, mask, shared=shared):
        expected = model(**batch).logits
    pruned = remove_units(copy.deepcopy(model), units)
    assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    assert neuron_layout(pruned).neurons_remaining == \
        neuron_layout(model).total_units - len(units["neurons"])


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_drops_by_exactly_the_removed_neuron_weights(family):
    model = make_model(family)
    hidden = head_layout(model).num_heads * head_layout(model).head_dim
    neurons = [(0, 1), (0, 2), (0, 36)]
    before = sum(p.numel() for p in model.parameters())
    ffn_before = feed_forward_parameter_count(model)
    remove_neurons(model, neurons)
    # per neuron: a row of the intermediate weight and its bias, a column of the output weight;
    # ModernBERT's gated Wi: two rows (input and gate), each with its bias
    per_neuron = 3 * hidden + 2 if family == "modernbert" else 2 * hidden + 1
    assert before - sum(p.numel() for p in model.parameters()) == per_neuron * len(neurons)
    assert ffn_before - feed_forward_parameter_count(model) == per_neuron * len(neurons)


def test_neuron_removal_is_incremental_and_keeps_original_indices():
    model = make_model("bert")
    batch = random_batch(model)
    remove_neurons(model, [(0, 2)])
    remove_neurons(model, [(0, 2), (0, 5), (1, 0)])  # (0, 2) is gone already: ignored
    layout = neuron_layout(model)
    assert layout.kept[0] == tuple(n for n in range(NEURONS) if n not in (2, 5))
    assert layout.kept[1] == tuple(range(1, NEURONS))
    # gates still index neurons by their original position
    mask = torch.ones(2, NEURONS)
    mask[0, 7] = 0
    with gate_neurons(model, mask):
        gated = model(**batch).logits
    assert_close(gated, remove_neurons(copy.deepcopy(model), [(0, 7)])(**batch).logits,
                 rtol=1e-5, atol=1e-5)


def test_neurons_that_do_not_exist_are_refused():
    with pytest.raises(ConfigError, match=r"neuron \(0, 37\) does not exist: the model has 2 "
                                          r"layers of 37 neurons"):
        remove_neurons(make_model("bert"), [(0, 37)])


@pytest.mark.parametrize("units", ["neurons", "both"])
def test_curves_of_neurons_are_equal_removed_or_masked(units):
    from headcount.evaluation import evaluate
    from headcount.pruning import CurveSettings, Ranking, pruning_curve

    model = make_model("bert")
    batch = classification_batch(model)
    scores = unit_importance(model, [batch], "classification", units=("heads", "neurons"))
    ranking = Ranking(scores={kind: imp.raw for kind, imp in scores.items()})

    def evaluate_model(candidate):
        return evaluate(candidate, [batch], "classification")

    curves = [pruning_curve(model, evaluate_model, ranking,
                            CurveSettings(ratios=[0, 0.25, 0.5, 1.0], units=units,
                                          physical=physical))
              for physical in (True, False)]
    for removed, masked in zip(*curves, strict=True):
        assert removed.pruned_neurons == masked.pruned_neurons
        assert removed.evaluation.mean_loss == pytest.approx(masked.evaluation.mean_loss,
                                                             abs=1e-5)
    neurons_left = [point.neurons_remaining for point in curves[0]]
    assert neurons_left == [74, 56, 37, 0]  # each ratio of all 2 x 37 neurons
    heads_left = [point.heads_remaining for point in curves[0]]
    assert heads_left == ([8, 6, 4, 0] if units == "both" else [8, 8, 8, 8])
    assert all(point.units == units for point in curves[0])


def test_a_random_order_prunes_neurons_too(checkpoints, glue_dir):
    from headcount.jobs.prepared import DataOptions
    from headcount.jobs.prune import CurveRequest, curve_job

    options = DataOptions("sst2", data_dir=str(glue_dir), split="dev", max_examples=8,
                          max_length=16)
    rows = curve_job(str(checkpoints["cls2"]), options,
                     CurveRequest(order="random", draws=2, ratios=[0.5], units="neurons"),
                     device="cpu")
    main = [row for row in rows if row["main"]]
    assert [(row["draw"], row["neurons_remaining"], row["heads_remaining"]) for row in main] \
        == [(0, 74, 8), (0, 37, 8), (1, 74, 8), (1, 37, 8)]
    assert {row["units"] for row in rows} == {"neurons"}
