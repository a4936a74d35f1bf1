"""The `curve` and `prune` jobs: from a checkpoint, data and scores to curve rows or a pruned
checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from headcount.checkpoints import check_empty_target, save_pruned_atomically
from headcount.errors import ConfigError
from headcount.estimators import check_estimator, estimate_importance
from headcount.importance import check_normalization, normalize, unit_importance, unit_kinds
from headcount.jobs.prepared import (
    DataOptions,
    PreparedTask,
    load_for_task,
    prepare_for,
    prepare_task,
)
from headcount.layouts import head_layout, neuron_layout, unit_layout
from headcount.models import CHECKPOINT_HEAD, load_model
from headcount.orders import check_order, model_order_scores
from headcount.pruning import (
    CurveSettings,
    Ranking,
    least_important_first,
    prunable_heads,
    pruning_curve,
    take_heads,
)
from headcount.records import curve_rows, heads_text, read_unit_scores
from headcount.removal import remove_units


@dataclass(frozen=True)
class CurveRequest:
    """What a pruning curve ranks heads (or feed-forward neurons, or both: `units`) by and
    how it steps.

    Heads are ranked by a scores file (`scores_path`), or by importance estimated with
    `estimator` on `rank_task` (default: the evaluated task) over `rank_options` data
    (default: the evaluated options on the train split; the iterative schedule estimates
    again on every step), or, for an `order` other than "importance" (see
    `headcount.orders`), in a random or layer-location order that needs neither: one curve
    per draw d in 0..draws-1, drawn with seed `options.seed + d`, every draw evaluated on
    the same examples. `normalize_method` None takes the scores file's, else l1.
    """

    rank_task: str | None = None
    rank_options: DataOptions | None = None
    scores_path: str | None = None
    normalize_method: str | None = None
    schedule: str = "one-shot"
    ratios: list[float] | None = None
    keep_one_per_layer: bool = False
    physical: bool = True
    order: str = "importance"
    draws: int | None = 1  # None: 5 for the random order, else 1
    estimator: str = "gradient"
    units: str = "heads"  # heads, neurons, or both (each pruned to the same ratio)

    @property
    def num_draws(self) -> int:
        # Random orders differ much from draw to draw; the layer orders only in their seeded
        # start/parity and head order within a layer, importance not at all.
        if self.draws is None:
            return 5 if self.order == "random" else 1
        return self.draws

    def settings(self) -> CurveSettings:
        ratios = None if self.ratios is None else sorted({0.0, *self.ratios})
        return CurveSettings(schedule=self.schedule, ratios=ratios,
                             keep_one_per_layer=self.keep_one_per_layer,
                             physical=self.physical, units=self.units)

    def check(self) -> None:
        """Every combination that cannot work, refused before anything is loaded."""
        check_order(self.order)
        draws, order = self.num_draws, self.order
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ConfigError(f"--draws {draws} must be a whole number >= 1")
        if order == "importance" and draws != 1:
            raise ConfigError(f"--draws {draws}: the importance order is not drawn at random; "
                              "draws apply to --order random and the layer orders")
        if order != "importance":
            for flag, given in (("--scores", self.scores_path), ("--rank-task", self.rank_task),
                                ("--normalize", self.normalize_method)):
                if given:
                    raise ConfigError(f"--order {order} does not use {flag}")
            if self.schedule == "iterative":
                raise ConfigError(f"--order {order} is fixed in advance: the iterative "
                                  "schedule re-estimates importance; use --schedule one-shot")
        if self.scores_path and self.rank_task:
            raise ConfigError("give either --scores or --rank-task, not both")
        check_estimator(self.estimator)
        if self.estimator != "gradient" and (self.scores_path or order != "importance"):
            raise ConfigError(
                f"--estimator {self.estimator} ranks heads on --rank-task data; "
                + ("a scores file was estimated already (headcount importance --estimator)"
                   if self.scores_path else f"--order {order} uses none"))
        if self.scores_path and self.schedule == "iterative":
            raise ConfigError("the iterative schedule re-estimates importance: use --rank-task, "
                              "not --scores")
        if self.normalize_method is not None:
            check_normalization(self.normalize_method)
        if unit_kinds(self.units) != ("heads",) and self.estimator != "gradient":
            raise ConfigError(f"--units {self.units}: neurons are ranked by the gradient "
                              f"estimator only, not {self.estimator}")


def curve_job(model: str, options: DataOptions, request: CurveRequest = CurveRequest(), *,
              device=None, progress: bool = False) -> list[dict]:
    """Pruning curve of `model` on `options.task` (see `CurveRequest` for how heads are
    ranked); the tidy rows (`headcount.records.CURVE_COLUMNS`). Rows carry `order` and
    `draw`; `summarize_draws` averages over draws.

    Example:
        >>> rows = curve_job("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"),
        ...                  CurveRequest(rank_options=DataOptions("sst2", data_dir=glue,
        ...                                                        fraction=0.2)))
        >>> random = curve_job("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"),
        ...                    CurveRequest(order="random", draws=5))
    """
    request.check()
    prepared = prepare_task(model, options, device=device)
    if request.order != "importance":
        return _order_curves(prepared, model, request, progress)
    ranking, rank_name = _ranking(prepared, model, request, device)
    points = pruning_curve(prepared.model, prepared.evaluate, ranking, request.settings(),
                           progress=progress)
    meta = {"model": model, "task": options.task, "rank_task": rank_name,
            "normalize": ranking.normalize_method, "schedule": request.schedule,
            "seed": options.seed}
    return curve_rows(points, meta)


def _ranking(prepared: PreparedTask, model: str, request: CurveRequest,
             device) -> tuple[Ranking, str]:
    """The curve's ranking (scores file or importance on the rank task) and its name."""
    options = prepared.options
    kinds = unit_kinds(request.units)
    if request.scores_path:
        scores, record = read_unit_scores(request.scores_path, prepared.model, kinds)
        rank_name = f"scores:{record.get('task', request.scores_path)}"
        if record.get("estimator", "gradient") != "gradient":
            rank_name += f" ({record['estimator']})"
        method = request.normalize_method or record.get("normalize", "l1")
        return Ranking(scores=scores, normalize_method=method), rank_name
    rank_spec = request.rank_task or options.task
    rank_options = replace(request.rank_options or replace(options, split="train"),
                           task=rank_spec)
    task = rank_options.resolve()
    loaded, rank_model = prepared.loaded, None
    if rank_spec != options.task:  # the same checkpoint with the rank task's head
        loaded = load_for_task(model, task, device=device, seed=options.seed)
        rank_model = loaded.model
    ranker = PreparedTask(task, loaded, prepare_for(loaded, task, rank_options), rank_options)
    estimator = request.estimator

    def rank(candidate):
        if kinds == ("heads",):
            return estimate_importance(candidate, ranker.batches(), ranker.data.kind,
                                       estimator, backoff=ranker.backoff).raw
        estimates = unit_importance(candidate, ranker.batches(), ranker.data.kind, units=kinds,
                                    backoff=ranker.backoff)
        return {kind: estimate.raw for kind, estimate in estimates.items()}

    rank_name = rank_spec if estimator == "gradient" else f"{rank_spec} ({estimator})"
    return Ranking(rank=rank, rank_model=rank_model,
                   normalize_method=request.normalize_method or "l1"), rank_name


def _order_curves(prepared: PreparedTask, model: str, request: CurveRequest,
                  progress: bool) -> list[dict]:
    """The rows of `request.draws` curves pruned in `request.order` (seeds seed + d)."""
    network, options, order, draws = prepared.model, prepared.options, request.order, \
        request.num_draws
    meta = {"model": model, "task": options.task, "rank_task": f"order:{order}",
            "normalize": "none", "schedule": request.schedule, "seed": options.seed,
            "order": order}
    rows, unpruned = [], ()
    for draw in tqdm(range(draws), disable=not progress or draws == 1, desc=f"{order} draws",
                     unit="draw"):
        scores = model_order_scores(network, order, options.seed + draw,
                                    unit_kinds(request.units))
        # The unpruned point (the same units, absent ones, in every draw) is evaluated once.
        points = pruning_curve(
            network, prepared.evaluate, Ranking(scores=scores, normalize_method="none"),
            request.settings(), progress=progress and draws == 1, completed=unpruned,
        )
        unpruned = points[:1]
        rows += curve_rows(points, {**meta, "draw": draw})
    return rows
@dataclass(frozen=True)
class PruneRequest:
    """Which units `prune_job` removes: heads, feed-forward neurons or both (`units`), the
    least important by a scores file (`scores_path`, normalised by `normalize_method`,
    default the file's) or the first of a random or layer-location `order` drawn with
    `seed`; `ratio` of each kind's units (or a number of `heads`); `keep_one_per_layer`
    never empties a layer."""

    scores_path: str | None = None
    order: str | None = None
    seed: int = 0
    ratio: float | None = None
    heads: int | None = None
    normalize_method: str | None = None
    keep_one_per_layer: bool = False
    units: str = "heads"

    def check(self) -> None:
        if (self.scores_path is None) == (self.order is None):
            raise ConfigError("give exactly one of --scores and --order")
        if self.order is not None:
            check_order(self.order)
            if self.order == "importance":
                raise ConfigError("--order importance needs scores: use --scores scores.json")
            if self.normalize_method is not None:
                raise ConfigError(f"--order {self.order} does not use --normalize")
        if (self.ratio is None) == (self.heads is None):
            raise ConfigError("give exactly one of --ratio and --heads")
        if self.ratio is not None and not 0 <= self.ratio <= 1:
            raise ConfigError(f"--ratio {self.ratio} is outside [0, 1]")
        if self.normalize_method is not None:
            check_normalization(self.normalize_method)
        if self.heads is not None and unit_kinds(self.units) != ("heads",):
            raise ConfigError(f"--heads counts heads; with --units {self.units} give --ratio")


def _ranking_scores(network, request: PruneRequest) -> tuple[dict[str, torch.Tensor], str]:
    """Each kind's scores (importance or positions in the order) and their normalisation."""
    kinds = unit_kinds(request.units)
    if request.order is None:
        scores, record = read_unit_scores(request.scores_path, network, kinds)
        return scores, request.normalize_method or record.get("normalize", "l1")
    # the scores are positions in the order
    return model_order_scores(network, request.order, request.seed, kinds), "none"


def _units_to_prune(network, request: PruneRequest) -> tuple[dict[str, list], str]:
    """Each kind's units to remove (absent ones left out), and the normalisation that
    ranked them."""
    scores, method = _ranking_scores(network, request)
    chosen = {}
    for kind, kind_scores in scores.items():
        layout = unit_layout(network, kind)
        count = round(request.ratio * layout.total_units) if request.ratio is not None \
            else request.heads
        limit = prunable_heads(layout, request.keep_one_per_layer)
        if not 0 <= count <= limit:
            shared = " (ALBERT keeps at least one shared head)" \
                if layout.shared_layers and kind == "heads" else ""
            raise ConfigError(f"cannot prune {count} {kind}: this model allows 0..{limit}"
                              + shared)
        absent = layout.absent()
        remaining = {layer: len(kept) for layer, kept in enumerate(layout.kept)}
        candidates = least_important_first(normalize(kind_scores, method),
                                           exclude=set(absent))
        chosen[kind] = take_heads(candidates, max(count - len(absent), 0), remaining,
                                  request.keep_one_per_layer)
    return chosen, method


def prune_job(model: str, out: str, request: PruneRequest, *, device=None) -> dict:
    """Remove the units `request` names from a checkpoint and save it to `out`, a
    checkpoint that also loads with stock transformers (see `headcount.portable`).

    Example:
        >>> prune_job("ckpt/", "pruned/", PruneRequest(order="top", ratio=0.5))["removed"]
    """
    request.check()
    check_empty_target(out)
    loaded = load_model(model, CHECKPOINT_HEAD, device=device or "cpu")
    chosen, method = _units_to_prune(loaded.model, request)
    before = sum(p.numel() for p in loaded.model.parameters())
    remove_units(loaded.model, chosen)
    after = sum(p.numel() for p in loaded.model.parameters())
    save_pruned_atomically(loaded.model, out, loaded.tokenizer)
    order = request.order
    return {
        "model": model, "out": out, "scores": request.scores_path, "units": request.units,
        "order": order or "importance", "seed": request.seed if order is not None else None,
        "normalize": method, "heads_removed": len(chosen.get("heads", ())),
        "heads_remaining": head_layout(loaded.model).heads_remaining,
        "neurons_removed": len(chosen.get("neurons", ())),
        "neurons_remaining": neuron_layout(loaded.model).neurons_remaining,
        "parameters_before": before, "parameters_after": after,
        "removed": heads_text(chosen.get("heads", ())),
    }
