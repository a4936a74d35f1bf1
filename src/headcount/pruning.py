"""The pruning-curve engine: heads removed least-important-first, the model scored at each ratio.

Heads are removed from least to most important in steps (default: 10% of all heads per
step) and the task metric is measured at each ratio; relative performance is the metric
over the unpruned model's. `one-shot` ranks once from the initial scores; `iterative`
re-estimates importance on the remaining heads after every step (Michel et al.).

At each step the curve evaluates a physically pruned copy of the model (fewer FLOPs than a
masked full-size model); `physical=False` gates the heads off instead, with the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, MutableMapping, Sequence
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


@dataclass(frozen=True)
class Ranking:
    """What orders the heads: fixed raw `scores` (`[layers, heads]`; one row for ALBERT),
    or `rank(model)`, which computes raw importance (and which the iterative schedule calls
    again after every step). `rank_model` (e.g. the same checkpoint with another task's head)
    is what `rank` is given instead of the evaluated model; it is pruned in step. Scores are
    normalised per layer by `normalize_method` before heads are ordered."""

    scores: torch.Tensor | None = None
    rank: Ranker | None = None
    rank_model: nn.Module | None = None
    normalize_method: str = "l1"


@dataclass(frozen=True)
class CurveSettings:
    """How a curve steps: `schedule` one-shot (rank once) or iterative (re-rank after every
    step); `ratios` of all heads of the original model (None: 0, 0.1, ..., 1);
    `keep_one_per_layer`; `physical` removes heads from copies of the models, otherwise
    heads are gated off (same numbers, more FLOPs)."""

    schedule: str = "one-shot"
    ratios: Sequence[float] | None = None
    keep_one_per_layer: bool = False
    physical: bool = True


class _Curve:
    """The state of one curve: the models being pruned and the heads pruned so far."""

    def __init__(self, model: nn.Module, ranking: Ranking, settings: CurveSettings):
        self.layout = head_layout(model)
        self.ranking, self.settings = ranking, settings
        self.model, self.rank_model = model, ranking.rank_model
        if settings.physical:
            self.model = copy.deepcopy(model)
            self.rank_model = copy.deepcopy(self.rank_model) if self.rank_model else None
        self.pruned: list[Head] = _absent_heads(self.layout)

    def importance(self) -> torch.Tensor:
        """Normalised importance of the current (pruned) model by `ranking.rank`."""
        target = self.model if self.rank_model is None else self.rank_model
        if self.settings.physical or not self.pruned:
            raw = self.ranking.rank(target)
        else:
            mask, shared = _mask_for(head_layout(target), self.pruned)
            with gate_heads(target, mask, shared=shared):
                raw = self.ranking.rank(target)
        return normalize(raw, self.ranking.normalize_method)

    def prune(self, new: Sequence[Head]) -> None:
        self.pruned.extend(new)
        if self.settings.physical:
            for target in (self.model, self.rank_model):
                if target is not None:
                    remove_heads(target, new)

    def prune_to(self, count: int, ranking: torch.Tensor) -> None:
        """Prune the least important heads until `count` are pruned."""
        remaining = {layer: self.layout.num_heads
                     for layer in range(self.layout.num_distinct_layers)}
        for layer, _ in self.pruned:
            remaining[layer] -= 1
        order = least_important_first(ranking, exclude=set(self.pruned))
        self.prune(take_heads(order, count - len(self.pruned), remaining,
                              self.settings.keep_one_per_layer))

    def evaluate(self, evaluate_model: Evaluator) -> Evaluation:
        if self.settings.physical:
            return evaluate_model(self.model)
        mask, shared = _mask_for(self.layout, self.pruned)
        with gate_heads(self.model, mask, shared=shared):
            return evaluate_model(self.model)

    def point(self, ratio: float, evaluation: Evaluation) -> CurvePoint:
        total = self.layout.total_heads
        return CurvePoint(ratio_requested=ratio, ratio_pruned=len(self.pruned) / total,
                          heads_remaining=total - len(self.pruned), pruned=tuple(self.pruned),
                          evaluation=evaluation)


def _initial_ranking(curve: _Curve) -> torch.Tensor:
    scores, layout = curve.ranking.scores, curve.layout
    if scores is None:
        return curve.importance()
    expected = (layout.num_distinct_layers, layout.num_heads)
    if tuple(scores.shape) != expected:
        raise ConfigError(
            f"scores have shape {list(scores.shape)}; the model's heads are {list(expected)}"
        )
    return normalize(scores, curve.ranking.normalize_method)


def pruning_curve(
    model: nn.Module,
    evaluate_model: Evaluator,
    ranking: Ranking,
    settings: CurveSettings = CurveSettings(),
    *,
    progress: bool = False,
    completed: Sequence[CurvePoint] = (),
    on_point: Callable[[CurvePoint], None] | None = None,
    evaluations: MutableMapping[frozenset, Evaluation] | None = None,
) -> list[CurvePoint]:
    """Prune least-important-first (by `ranking`) and evaluate at each ratio of `settings`.

    Ratios count all heads of the original model, including any a pruned checkpoint lacks;
    the caller's models are never changed. Resuming: `completed` points (of an interrupted
    run of the same curve) are taken as they are, their heads pruned without evaluating
    again; `on_point` is called with each newly evaluated point, e.g. to save it at once.
    `evaluations` holds the evaluations of the same model on the same examples by the set of
    heads pruned, shared by several curves: a set evaluated before (the unpruned model,
    every head pruned, which every order reaches) is taken from it, a new one is added.

    Example:
        >>> points = pruning_curve(model, lambda m: evaluate(m, batches, "classification"),
        ...                        Ranking(scores=importance.raw), CurveSettings(ratios=[0, 0.5]))
        >>> points[1].evaluation.score / points[0].evaluation.score
    """
    check_choice("schedule", settings.schedule, SCHEDULES)
    if settings.schedule == "iterative" and ranking.rank is None:
        raise ConfigError("the iterative schedule re-estimates importance: it needs a rank task")
    if ranking.scores is None and ranking.rank is None:
        raise ConfigError("give importance scores or a task to rank heads by")
    explicit = settings.ratios is not None
    layout = head_layout(model)
    steps = target_counts(check_ratios(settings.ratios if explicit else step_ratios(0.1)),
                          layout, settings.keep_one_per_layer, explicit)
    curve = _Curve(model, ranking, settings)
    absent = len(curve.pruned)
    order = _initial_ranking(curve)
    done = {point.ratio_requested: point for point in completed}
    points = []
    for ratio, count in tqdm(steps, disable=not progress, desc="pruning curve", unit="step"):
        if ratio in done:
            curve.prune([head for head in done[ratio].pruned if head not in set(curve.pruned)])
            points.append(done[ratio])
            continue
        if count > len(curve.pruned):
            if settings.schedule == "iterative" and len(curve.pruned) > absent:
                order = curve.importance()
            curve.prune_to(count, order)
        pruned, shared = frozenset(curve.pruned), {} if evaluations is None else evaluations
        if pruned not in shared:
            shared[pruned] = curve.evaluate(evaluate_model)
        points.append(curve.point(ratio, shared[pruned]))
        if on_point is not None:
            on_point(points[-1])
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
