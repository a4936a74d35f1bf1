"""The pruning-curve engine: units removed least-important-first, the model scored at each
ratio.

Heads (or feed-forward neurons, or both, each kind to the same ratio) are removed from least
to most important in steps (default: 10% of all units per step) and the task metric is
measured at each ratio; relative performance is the metric over the unpruned model's.
`one-shot` ranks once from the initial scores; `iterative` re-estimates importance on the
remaining units after every step (Michel et al.).

At each step the curve evaluates a physically pruned copy of the model (fewer FLOPs than a
masked full-size model); `physical=False` gates the units off instead, with the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from headcount.choices import SCHEDULES, check_choice
from headcount.errors import ConfigError
from headcount.evaluation import Evaluation
from headcount.gates import gate_units, gated
from headcount.importance import normalize, unit_kinds
from headcount.layouts import HeadLayout, UnitLayout, head_layout, unit_layout
from headcount.removal import Head, Neuron, remove_units


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
    """How many units (counting any a pruned checkpoint already lacks) can be pruned: all,
    less one per layer that still has units when keeping one; never the last head of
    ALBERT's single shared layer (its feed-forward neurons may all go: the block then adds
    only its bias)."""
    keeps_heads = isinstance(layout, HeadLayout) and layout.shared_layers
    if keep_one_per_layer or keeps_heads:
        return layout.total_units - sum(1 for units in layout.kept if units)
    return layout.total_units


def target_counts(ratios: Sequence[float], layout, keep_one_per_layer: bool,
                  explicit: bool) -> list[tuple[float, int]]:
    """(requested ratio, number of units to prune) per step, duplicates of the same count
    dropped. Units a pruned checkpoint already lacks count as pruned, so ratios below that
    share collapse into its first point. A requested ratio that would prune every head of
    ALBERT is an error when the user asked for it explicitly; default steps stop short."""
    limit = prunable_heads(layout, keep_one_per_layer)
    absent = layout.total_units - layout.units_remaining
    steps, seen = [], set()
    for ratio in ratios:
        count = max(round(ratio * layout.total_units), absent)
        if count > limit:
            if layout.shared_layers and not keep_one_per_layer and explicit:
                raise ConfigError(
                    f"ratio {ratio} would prune every head of ALBERT ({layout.total_units}); "
                    f"at most {limit} of its shared heads can go"
                )
            count = limit
        if count not in seen:
            seen.add(count)
            steps.append((ratio, count))
    return steps


def curve_steps(ratios: Sequence[float], layouts: dict[str, UnitLayout],
                keep_one_per_layer: bool, explicit: bool) -> list[tuple[float, dict[str, int]]]:
    """(requested ratio, units of each kind to prune) per step: the ratio applies to each
    kind; steps that prune the same numbers as an earlier one are dropped."""
    per_kind = {kind: dict(target_counts(ratios, layout, keep_one_per_layer, explicit))
                for kind, layout in layouts.items()}
    steps, seen = [], set()
    for ratio in ratios:
        counts = {}
        for kind, by_ratio in per_kind.items():
            # target_counts dropped ratios that repeat a count: they prune the one before
            earlier = [r for r in by_ratio if r <= ratio]
            counts[kind] = by_ratio[max(earlier)] if earlier else min(by_ratio.values())
        key = tuple(counts.values())
        if key not in seen:
            seen.add(key)
            steps.append((ratio, counts))
    return steps


@dataclass(frozen=True)
class CurvePoint:
    ratio_requested: float
    ratio_pruned: float          # units pruned / all units (the mean over the kinds pruned)
    heads_remaining: int
    pruned: tuple[Head, ...]     # every head pruned at this point, in pruning order
    evaluation: Evaluation
    units: str = "heads"         # what the curve prunes: heads, neurons or both
    neurons_remaining: int | None = None
    pruned_neurons: tuple[Neuron, ...] = ()


# (model) -> Evaluation of the eval task; (model) -> raw importance for ranking: [layers,
# heads], or {kind: [layers, units]} for curves of neurons
Evaluator = Callable[[nn.Module], Evaluation]
Ranker = Callable[[nn.Module], "torch.Tensor | dict[str, torch.Tensor]"]


def _by_kind(scores, kinds: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """Scores as {kind: tensor}: a bare tensor holds head scores."""
    if isinstance(scores, torch.Tensor):
        scores = {"heads": scores}
    missing = [kind for kind in kinds if kind not in scores]
    if missing:
        raise ConfigError(f"{what} hold no {' or '.join(missing)} scores: a curve of "
                          f"{' and '.join(kinds)} needs them")
    return {kind: scores[kind] for kind in kinds}


@contextmanager
def _gated_off(model: nn.Module, pruned: dict[str, list]) -> Iterator[None]:
    """The block with every unit in `pruned` gated to 0 (shared gates for ALBERT)."""
    with ExitStack() as stack:
        for kind, units in pruned.items():
            if not units:
                continue
            layout = unit_layout(model, kind)
            mask = torch.ones(layout.num_distinct_layers, layout.num_units)
            for layer, unit in units:
                mask[layer, unit] = 0
            shared = layout.shared_layers
            stack.enter_context(gate_units(gated(model, kind), mask[0] if shared else mask,
                                           shared=shared))
        yield


@dataclass(frozen=True)
class Ranking:
    """What orders the units: fixed raw `scores` (`[layers, heads]`, one row for ALBERT; or
    `{kind: [layers, units]}` with "heads" and/or "neurons"), or `rank(model)`, which computes
    raw importance in the same form (and which the iterative schedule calls again after
    every step). `rank_model` (e.g. the same checkpoint with another task's head) is what
    `rank` is given instead of the evaluated model; it is pruned in step. Scores are
    normalised per layer by `normalize_method` before units are ordered."""

    scores: torch.Tensor | dict[str, torch.Tensor] | None = None
    rank: Ranker | None = None
    rank_model: nn.Module | None = None
    normalize_method: str = "l1"


@dataclass(frozen=True)
class CurveSettings:
    """How a curve steps: `units` pruned (heads, neurons, or both, each to the same ratio);
    `schedule` one-shot (rank once) or iterative (re-rank after every step); `ratios` of all
    units of the original model (None: 0, 0.1, ..., 1); `keep_one_per_layer`; `physical`
    removes units from copies of the models, otherwise they are gated off (same numbers,
    more FLOPs)."""

    schedule: str = "one-shot"
    ratios: Sequence[float] | None = None
    keep_one_per_layer: bool = False
    physical: bool = True
    units: str = "heads"


class _Curve:
    """The state of one curve: the models being pruned and the units pruned so far."""

    def __init__(self, model: nn.Module, ranking: Ranking, settings: CurveSettings):
        self.kinds = unit_kinds(settings.units)
        self.layouts = {kind: unit_layout(model, kind) for kind in self.kinds}
        self.ranking, self.settings = ranking, settings
        self.model, self.rank_model = model, ranking.rank_model
        if settings.physical:
            self.model = copy.deepcopy(model)
            self.rank_model = copy.deepcopy(self.rank_model) if self.rank_model else None
        self.pruned = {kind: layout.absent() for kind, layout in self.layouts.items()}

    def count(self) -> int:
        return sum(len(units) for units in self.pruned.values())

    def importance(self) -> dict[str, torch.Tensor]:
        """Normalised importance of the current (pruned) model by `ranking.rank`."""
        target = self.model if self.rank_model is None else self.rank_model
        if self.settings.physical:
            raw = self.ranking.rank(target)
        else:
            with _gated_off(target, self.pruned):
                raw = self.ranking.rank(target)
        return {kind: normalize(scores, self.ranking.normalize_method)
                for kind, scores in _by_kind(raw, self.kinds, "the rank task's scores").items()}

    def prune(self, new: dict[str, list]) -> None:
        for kind, units in new.items():
            self.pruned[kind].extend(units)
        if self.settings.physical:
            for target in (self.model, self.rank_model):
                if target is not None:
                    remove_units(target, new)

    def prune_to(self, counts: dict[str, int], order: dict[str, torch.Tensor]) -> None:
        """Prune the least important units of each kind until `counts` are pruned."""
        new = {}
        for kind, count in counts.items():
            layout, pruned = self.layouts[kind], self.pruned[kind]
            remaining = {layer: layout.num_units for layer in range(layout.num_distinct_layers)}
            for layer, _ in pruned:
                remaining[layer] -= 1
            candidates = least_important_first(order[kind], exclude=set(pruned))
            new[kind] = take_heads(candidates, count - len(pruned), remaining,
                                   self.settings.keep_one_per_layer)
        self.prune(new)

    def evaluate(self, evaluate_model: Evaluator) -> Evaluation:
        if self.settings.physical:
            return evaluate_model(self.model)
        with _gated_off(self.model, self.pruned):
            return evaluate_model(self.model)

    def point(self, ratio: float, evaluation: Evaluation) -> CurvePoint:
        shares = [len(self.pruned[kind]) / self.layouts[kind].total_units
                  for kind in self.kinds]
        heads = self.layouts.get("heads") or head_layout(self.model)
        neurons = self.layouts.get("neurons")
        return CurvePoint(
            ratio_requested=ratio, ratio_pruned=sum(shares) / len(shares),
            heads_remaining=heads.total_units - len(self.pruned.get("heads", heads.absent())),
            pruned=tuple(self.pruned.get("heads", ())), evaluation=evaluation,
            units=self.settings.units,
            neurons_remaining=None if neurons is None
            else neurons.total_units - len(self.pruned["neurons"]),
            pruned_neurons=tuple(self.pruned.get("neurons", ())),
        )


def _initial_ranking(curve: _Curve) -> dict[str, torch.Tensor]:
    if curve.ranking.scores is None:
        return curve.importance()
    ordered = {}
    for kind, scores in _by_kind(curve.ranking.scores, curve.kinds, "the scores").items():
        layout = curve.layouts[kind]
        expected = (layout.num_distinct_layers, layout.num_units)
        if tuple(scores.shape) != expected:
            raise ConfigError(f"scores have shape {list(scores.shape)}; the model's {kind} "
                              f"are {list(expected)}")
        ordered[kind] = normalize(scores, curve.ranking.normalize_method)
    return ordered


def _resume(curve: _Curve, point: CurvePoint) -> None:
    """Prune what a completed point had pruned, without evaluating again."""
    done = {"heads": point.pruned, "neurons": point.pruned_neurons}
    curve.prune({kind: [unit for unit in done[kind] if unit not in set(curve.pruned[kind])]
                 for kind in curve.kinds})


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

    Ratios count all units of the original model, including any a pruned checkpoint lacks;
    the caller's models are never changed. Resuming: `completed` points (of an interrupted
    run of the same curve) are taken as they are, their units pruned without evaluating
    again; `on_point` is called with each newly evaluated point, e.g. to save it at once.
    `evaluations` holds the evaluations of the same model on the same examples by the set of
    units pruned (kind and unit), shared by several curves: a set evaluated before (the
    unpruned model, every unit pruned, which every order reaches) is taken from it, a new one
    is added.

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
    curve = _Curve(model, ranking, settings)
    steps = curve_steps(check_ratios(settings.ratios if explicit else step_ratios(0.1)),
                        curve.layouts, settings.keep_one_per_layer, explicit)
    absent = curve.count()
    order = _initial_ranking(curve)
    done = {point.ratio_requested: point for point in completed}
    points = []
    for ratio, counts in tqdm(steps, disable=not progress, desc="pruning curve", unit="step"):
        if ratio in done:
            _resume(curve, done[ratio])
            points.append(done[ratio])
            continue
        if sum(counts.values()) > curve.count():
            if settings.schedule == "iterative" and curve.count() > absent:
                order = curve.importance()
            curve.prune_to(counts, order)
        pruned = frozenset((kind, unit) for kind, units in curve.pruned.items() for unit in units)
        shared = {} if evaluations is None else evaluations
        if pruned not in shared:
            shared[pruned] = curve.evaluate(evaluate_model)
        points.append(curve.point(ratio, shared[pruned]))
        if on_point is not None:
            on_point(points[-1])
    return points


def point_record(point: CurvePoint) -> dict:
    """A curve point as JSON (for resumable storage)."""
    evaluation = point.evaluation
    record = {
        "ratio_requested": point.ratio_requested, "ratio_pruned": point.ratio_pruned,
        "heads_remaining": point.heads_remaining,
        "pruned": [list(head) for head in point.pruned],
        "metrics": evaluation.metrics, "main": evaluation.main,
        "mean_loss": evaluation.mean_loss, "num_examples": evaluation.num_examples,
        "final_batch_size": evaluation.final_batch_size,
    }
    if point.units != "heads":
        record.update(units=point.units, neurons_remaining=point.neurons_remaining,
                      pruned_neurons=[list(neuron) for neuron in point.pruned_neurons])
    return record


def point_from_record(record: dict) -> CurvePoint:
    return CurvePoint(
        ratio_requested=record["ratio_requested"], ratio_pruned=record["ratio_pruned"],
        heads_remaining=record["heads_remaining"],
        pruned=tuple((int(layer), int(head)) for layer, head in record["pruned"]),
        evaluation=Evaluation(record["metrics"], record["main"], record["mean_loss"],
                              record["num_examples"], record.get("final_batch_size")),
        units=record.get("units", "heads"),
        neurons_remaining=record.get("neurons_remaining"),
        pruned_neurons=tuple((int(layer), int(unit))
                             for layer, unit in record.get("pruned_neurons", ())),
    )
