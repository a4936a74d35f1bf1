"""Pruning orders, schedules and curves."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, random_batch

from headcount.errors import ConfigError
from headcount.evaluation import Evaluation, evaluate
from headcount.importance import head_importance, normalize
from headcount.layouts import head_layout
from headcount.pruning import (
    CurveSettings,
    Ranking,
    least_important_first,
    pruning_curve,
    step_ratios,
    take_heads,
    target_counts,
)


def run_curve(model, evaluate_model, **kwargs):
    """`pruning_curve` with its Ranking and CurveSettings fields given as keywords."""
    fields = ("scores", "rank", "rank_model", "normalize_method")
    ranking = Ranking(**{key: kwargs.pop(key) for key in fields if key in kwargs})
    return pruning_curve(model, evaluate_model, ranking, CurveSettings(**kwargs))


def test_step_ratios():
    assert step_ratios(0.1) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert step_ratios(0.3) == [0.0, 0.3, 0.6, 0.9, 1.0]
    with pytest.raises(ConfigError, match="--step 0"):
        step_ratios(0)


def test_one_shot_order_is_sorting_the_scores():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 5, generator=generator)
    order = least_important_first(scores)
    values = [float(scores[layer, head]) for layer, head in order]
    assert values == sorted(scores.flatten().tolist())
    assert sorted(order) == [(layer, head) for layer in range(3) for head in range(5)]


def test_ties_are_broken_by_position_and_excluded_heads_are_left_out():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert least_important_first(scores) == [(0, 1), (1, 0), (0, 0), (1, 1)]
    assert least_important_first(scores, exclude={(1, 0)}) == [(0, 1), (0, 0), (1, 1)]


def test_keep_one_per_layer_skips_the_last_head_of_a_layer():
    order = [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1)]
    assert take_heads(order, 4, {0: 3, 1: 2}, keep_one_per_layer=True) == [
        (0, 0), (0, 1), (1, 0)]
    assert take_heads(order, 4, {0: 3, 1: 2}, keep_one_per_layer=False) == order[:4]


def test_albert_default_steps_stop_before_the_last_head():
    layout = head_layout(make_model("albert"))
    counts = [count for _, count in target_counts(step_ratios(0.1), layout, False, False)]
    assert counts == [0, 1, 2, 3]  # 4 shared heads: at most 3 can go
    with pytest.raises(ConfigError, match="every head of ALBERT"):
        target_counts([0.0, 1.0], layout, False, True)


class Counting:
    """An evaluator whose metric is the number of heads left (and how often it ran)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model) -> Evaluation:
        self.calls += 1
        remaining = head_layout(model).heads_remaining
        return Evaluation({"accuracy": float(remaining)}, "accuracy", 0.0, 1)


def test_iterative_schedule_re_ranks_after_every_step():
    """A ranker whose scores depend on what was pruned: layer 1 becomes unimportant once a
    head of layer 0 is gone. One-shot keeps the initial order; iterative must follow."""

    def rank(model):
        kept = head_layout(model).kept
        scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
        if len(kept[0]) < 4:
            scores[1] = torch.tensor([0.1, 0.2, 0.3, 0.4])
        return scores

    model = make_model("bert")
    common = dict(rank=rank, normalize_method="none", ratios=[0, 0.125, 0.25, 0.375])
    one_shot = run_curve(model, Counting(), schedule="one-shot", **common)
    iterative = run_curve(model, Counting(), schedule="iterative", **common)
    assert one_shot[-1].pruned == ((0, 0), (0, 1), (0, 2))
    assert iterative[-1].pruned == ((0, 0), (1, 0), (1, 1))
    assert head_layout(model).heads_remaining == 8  # the caller's model is untouched


@pytest.mark.parametrize("physical", [True, False])
def test_curve_is_monotone_in_heads_remaining_and_nested(physical):
    model = make_model("roberta")
    scores = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))
    points = run_curve(model, Counting(), scores=scores, physical=physical)
    remaining = [p.heads_remaining for p in points]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] == 8
    assert remaining[-1] == 0
    for before, after in zip(points, points[1:], strict=False):
        assert after.pruned[: len(before.pruned)] == before.pruned
    if physical:  # the evaluated copy really lost the heads
        assert [p.evaluation.score for p in points] == [float(r) for r in remaining]


@pytest.mark.parametrize("physical", [True, False])
def test_curves_share_the_evaluations_of_the_same_heads_pruned(physical):
    """Every order starts unpruned and ends with every head pruned: with a shared store,
    those evaluations are made once, and the curves are the same as without it."""
    model = make_model("bert")
    generator = torch.Generator().manual_seed(2)
    first, second = (torch.rand(2, 4, generator=generator) for _ in range(2))
    ratios = [0, 0.5, 1.0]
    alone = [run_curve(model, Counting(), scores=s, ratios=ratios, physical=physical)
             for s in (first, second)]
    store, counting = {}, Counting()
    shared = [pruning_curve(model, counting, Ranking(scores=s),
                            CurveSettings(ratios=ratios, physical=physical), evaluations=store)
              for s in (first, second)]
    assert counting.calls == 4  # 0 and 1.0 once; the two 0.5 points differ
    assert len(store) == 4 and frozenset() in store
    for a, b in zip(alone, shared, strict=True):
        assert [(p.pruned, p.evaluation) for p in a] == [(p.pruned, p.evaluation) for p in b]


def test_physical_and_masked_curves_give_the_same_numbers():
    model = make_model("bert")
    batch = random_batch(model, 6, 9)
    batch["labels"] = torch.tensor([0, 1, 0, 1, 1, 0])
    scores = head_importance(model, [batch], "classification").raw

    def evaluate_model(candidate):
        return evaluate(candidate, [batch], "classification", "accuracy")

    common = dict(scores=scores, ratios=[0, 0.25, 0.5, 0.75, 1.0])
    physical = run_curve(model, evaluate_model, physical=True, **common)
    masked = run_curve(model, evaluate_model, physical=False, **common)
    for a, b in zip(physical, masked, strict=True):
        assert a.pruned == b.pruned
        assert a.evaluation.mean_loss == pytest.approx(b.evaluation.mean_loss, abs=1e-5)
        assert a.evaluation.metrics == b.evaluation.metrics


def test_iterative_masked_and_physical_agree():
    model = make_model("bert", dtype=torch.float64)
    batch = random_batch(model, 6, 9)
    batch["labels"] = torch.tensor([0, 1, 0, 1, 1, 0])

    def rank(candidate):
        return head_importance(candidate, [batch], "classification").raw

    def evaluate_model(candidate):
        return evaluate(candidate, [batch], "classification", "accuracy")

    common = dict(rank=rank, schedule="iterative", ratios=[0, 0.25, 0.5, 0.75])
    physical = run_curve(model, evaluate_model, physical=True, **common)
    masked = run_curve(model, evaluate_model, physical=False, **common)
    assert [p.pruned for p in physical] == [p.pruned for p in masked]


def test_scores_of_the_wrong_shape_are_refused():
    with pytest.raises(ConfigError, match=r"scores have shape \[3, 4\]"):
        run_curve(make_model("bert"), Counting(), scores=torch.ones(3, 4))


@pytest.mark.parametrize("ratios", [[0, 1.5], [-0.1]])
def test_ratios_outside_the_unit_interval_are_refused(ratios):
    with pytest.raises(ConfigError, match="outside"):
        run_curve(make_model("bert"), Counting(), scores=torch.ones(2, 4), ratios=ratios)


def test_normalisation_changes_the_order_across_layers():
    scores = torch.tensor([[10.0, 20.0], [1.0, 3.0]])
    assert least_important_first(normalize(scores, "none"))[0] == (1, 0)
    assert least_important_first(normalize(scores, "l1"))[0] == (1, 0)  # 0.25 < 0.33
    assert least_important_first(normalize(scores, "l1"))[1] == (0, 0)
