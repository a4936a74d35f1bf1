"""Pruning orders and pruning curves.

Heads are removed from least to most important in steps (default: 10% of all heads per
step) and the task metric is measured at each ratio; relative performance is the metric
over the unpruned model's. `one-shot` ranks once from the initial scores; `iterative`
re-estimates importance on the remaining heads after every step (Michel et al.).

At each step the curve evaluates a physically pruned copy of the model (fewer FLOPs than a
masked full-size model); `physical=False` gates the heads off instead, with the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from headcount.arch import head_layout
from headcount.choices import SCHEDULES, check_choice
from headcount.errors import ConfigError
from headcount.evaluation import Evaluation
from headcount.gates import gate_heads
from headcount.importance import normalize
from headcount.removal import Head, remove_heads


def step_ratios(step: float = 0.1) -> list[float]:
    """0, step, 2·step, ..., 1 (the last step may be shorter)."""
    if not 0 < step <= 1:
        raise ConfigError(f"--step {step} is not in (0, 1]")
    count = int(round(1 / step, 9))
    ratios = [round(i * step, 10) for i in range(count + 1)]
    return ratios if ratios[-1] >= 1 else [*ratios, 1.0]


def check_ratios(ratios: Sequence[float]) -> list[float]:
    bad = [r for r in ratios if not 0 <= r <= 1]
    if bad:
        raise ConfigError(f"pruning ratios {bad} are outside [0, 1]")
    if not ratios:
        raise ConfigError("no pruning ratios given")
    return sorted(set(float(r) for r in ratios))


def least_important_first(scores: torch.Tensor, exclude: set[Head] = frozenset()) -> list[Head]:
    """All heads (layer, head) sorted by score, ascending; ties by position. `exclude`d heads
    (already pruned) are left out."""
    layers, heads = scores.shape
    flat = scores.flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i], i))
    return [(i // heads, i % heads) for i in order if (i // heads, i % heads) not in exclude]


def take_heads(candidates: Sequence[Head], count: int, remaining_per_layer: dict[int, int],
               keep_one_per_layer: bool) -> list[Head]:
    """The first `count` candidates, skipping heads that would empty a layer when
    `keep_one_per_layer` is set."""
    remaining = dict(remaining_per_layer)
    taken = []
    for layer, head in candidates:
        if len(taken) == count:
            break
        if keep_one_per_layer and remaining[layer] <= 1:
            continue
        taken.append((layer, head))
        remaining[layer] -= 1
    return taken


def prunable_heads(layout, keep_one_per_layer: bool) -> int:
    """How many heads (counting any a pruned checkpoint already lacks) can be pruned: all,
    less one per layer that still has heads when keeping one, and never the last head of
    ALBERT's single shared layer."""
    if keep_one_per_layer or layout.shared_layers:
        return layout.total_heads - sum(1 for heads in layout.kept if heads)
    return layout.total_heads


def target_counts(ratios: Sequence[float], layout, keep_one_per_layer: bool,
                  explicit: bool) -> list[tuple[float, int]]:
    """(requested ratio, number of heads to prune) per step, duplicates of the same count
    dropped. Heads a pruned checkpoint already lacks count as pruned, so ratios below that
    share collapse into its first point. A requested ratio that would prune every head of
    ALBERT is an error when the user asked for it explicitly; default steps stop short."""
    limit = prunable_heads(layout, keep_one_per_layer)
    absent = layout.total_heads - layout.heads_remaining
    steps, seen = [], set()
    for ratio in ratios:
        count = max(round(ratio * layout.total_heads), absent)
        if count > limit:
            if layout.shared_layers and not keep_one_per_layer and explicit:
                raise ConfigError(
                    f"ratio {ratio} would prune every head of ALBERT ({layout.total_heads}); "
                    f"at most {limit} of its shared heads can go"
                )
            count = limit
        if count not in seen:
            seen.add(count)
            steps.append((ratio, count))
    return steps


@dataclass(frozen=True)
class CurvePoint:
    ratio_requested: float
    ratio_pruned: float          # heads pruned / all heads
    heads_remaining: int
    pruned: tuple[Head, ...]     # every head pruned at this point, in pruning order
    evaluation: Evaluation


# (model) -> Evaluation of the eval task; (model) -> raw importance [layers, heads] for ranking
Evaluator = Callable[[nn.Module], Evaluation]
Ranker = Callable[[nn.Module], torch.Tensor]


def _mask_for(layout, pruned: Sequence[Head]) -> tuple[torch.Tensor, bool]:
    """A 0/1 gate switching `pruned` off: [heads] shared for ALBERT, else [layers, heads]."""
    mask = torch.ones(layout.num_distinct_layers, layout.num_heads)
    for layer, head in pruned:
        mask[layer, head] = 0
    return (mask[0], True) if layout.shared_layers else (mask, False)


def _absent_heads(layout) -> list[Head]:
    """Heads a (pruned) checkpoint no longer has."""
    return [(layer, head) for layer, kept in enumerate(layout.kept)
            for head in range(layout.num_heads) if head not in kept]


def pruning_curve(
    model: nn.Module,
    evaluate_model: Evaluator,
    *,
    scores: torch.Tensor | None = None,
    rank: Ranker | None = None,
    rank_model: nn.Module | None = None,
    normalize_method: str = "l1",
    schedule: str = "one-shot",
    ratios: Sequence[float] | None = None,
    keep_one_per_layer: bool = False,
    physical: bool = True,
    progress: bool = False,
    completed: Sequence[CurvePoint] = (),
    on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """Prune least-important-first and evaluate at each ratio.

    `scores` (raw, `[layers, heads]`; one row for ALBERT) fixes the initial order; without
    them `rank(model)` computes raw importance, and the iterative schedule calls it again
    after every step. `rank_model` (e.g. the same checkpoint with another task's head) is
    what `rank` is given instead of `model`; it is pruned in step. With `physical` the
    models are copied and heads removed from the copies; otherwise heads are gated off.
    Ratios count all heads of the original model, including any a pruned checkpoint lacks.

    Resuming: `completed` points (of an interrupted run of the same curve) are taken as they
    are, their heads pruned without evaluating again; `on_point` is called with each newly
    evaluated point, e.g. to save it at once.

    Example:
        >>> points = pruning_curve(model, lambda m: evaluate(m, batches, "classification"),
        ...                        scores=importance.raw, ratios=[0, 0.5])
        >>> points[1].evaluation.score / points[0].evaluation.score
    """
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "iterative" and rank is None:
        raise ConfigError("the iterative schedule re-estimates importance: it needs a rank task")
    if scores is None and rank is None:
        raise ConfigError("give importance scores or a task to rank heads by")
    layout = head_layout(model)
    explicit = ratios is not None
    steps = target_counts(check_ratios(ratios if explicit else step_ratios(0.1)), layout,
                          keep_one_per_layer, explicit)
    if physical:
        model = copy.deepcopy(model)
        rank_model = copy.deepcopy(rank_model) if rank_model is not None else None
    pruned: list[Head] = _absent_heads(layout)

    def current_importance() -> torch.Tensor:
        target = model if rank_model is None else rank_model
        if physical or not pruned:
            raw = rank(target)
        else:
            mask, shared = _mask_for(head_layout(target), pruned)
            with gate_heads(target, mask, shared=shared):
                raw = rank(target)
        return normalize(raw, normalize_method)

    if scores is not None:
        expected = (layout.num_distinct_layers, layout.num_heads)
        if tuple(scores.shape) != expected:
            raise ConfigError(
                f"scores have shape {list(scores.shape)}; the model's heads are {list(expected)}"
            )
        ranking = normalize(scores, normalize_method)
    else:
        ranking = current_importance()
    done = {point.ratio_requested: point for point in completed}
    points = []
    for ratio, count in tqdm(steps, disable=not progress, desc="pruning curve", unit="step"):
        if ratio in done:
            point = done[ratio]
            new = [head for head in point.pruned if head not in set(pruned)]
            pruned.extend(new)
            if physical:
                for target in (model, rank_model):
                    if target is not None:
                        remove_heads(target, new)
            points.append(point)
            continue
        if count > len(pruned):
            if schedule == "iterative" and len(pruned) > len(_absent_heads(layout)):
                ranking = current_importance()
            remaining = {layer: layout.num_heads for layer in range(layout.num_distinct_layers)}
            for layer, _ in pruned:
                remaining[layer] -= 1
            order = least_important_first(ranking, exclude=set(pruned))
            new = take_heads(order, count - len(pruned), remaining, keep_one_per_layer)
            pruned.extend(new)
            if physical:
                for target in (model, rank_model):
                    if target is not None:
                        remove_heads(target, new)
        if physical:
            evaluation = evaluate_model(model)
        else:
            mask, shared = _mask_for(layout, pruned)
            with gate_heads(model, mask, shared=shared):
                evaluation = evaluate_model(model)
        point = CurvePoint(
            ratio_requested=ratio, ratio_pruned=len(pruned) / layout.total_heads,
            heads_remaining=layout.total_heads - len(pruned), pruned=tuple(pruned),
            evaluation=evaluation,
        )
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def point_record(point: CurvePoint) -> dict:
    """A curve point as JSON (for resumable storage)."""
    evaluation = point.evaluation
    return {
        "ratio_requested": point.ratio_requested, "ratio_pruned": point.ratio_pruned,
        "heads_remaining": point.heads_remaining,
        "pruned": [list(head) for head in point.pruned],
        "metrics": evaluation.metrics, "main": evaluation.main,
        "mean_loss": evaluation.mean_loss, "num_examples": evaluation.num_examples,
    }


def point_from_record(record: dict) -> CurvePoint:
    return CurvePoint(
        ratio_requested=record["ratio_requested"], ratio_pruned=record["ratio_pruned"],
        heads_remaining=record["heads_remaining"],
        pruned=tuple((int(layer), int(head)) for layer, head in record["pruned"]),
        evaluation=Evaluation(record["metrics"], record["main"], record["mean_loss"],
                              record["num_examples"]),
    )
