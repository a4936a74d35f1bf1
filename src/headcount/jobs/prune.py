"""The `curve` and `prune` jobs: from a checkpoint, data and scores to curve rows or a pruned
checkpoint."""

from __future__ import annotations

from dataclasses import replace

from tqdm.auto import tqdm

from headcount.arch import head_layout
from headcount.checkpoints import check_empty_target, save_pruned_atomically
from headcount.errors import ConfigError
from headcount.estimators import check_estimator, estimate_importance
from headcount.importance import check_normalization, normalize
from headcount.jobs.prepared import DataOptions, load_for_task, prepare_for, prepare_task
from headcount.models import CHECKPOINT_HEAD, load_model
from headcount.orders import check_order, model_head_order, order_scores
from headcount.pruning import (
    least_important_first,
    prunable_heads,
    pruning_curve,
    take_heads,
)
from headcount.records import curve_rows, heads_text, read_scores
from headcount.removal import remove_heads


def curve_job(
    model: str,
    options: DataOptions,
    *,
    rank_task: str | None = None,
    rank_options: DataOptions | None = None,
    scores_path: str | None = None,
    normalize_method: str | None = None,
    schedule: str = "one-shot",
    ratios: list[float] | None = None,
    keep_one_per_layer: bool = False,
    physical: bool = True,
    device=None,
    progress: bool = False,
    order: str = "importance",
    draws: int | None = 1,
    estimator: str = "gradient",
) -> list[dict]:
    """Pruning curve of `model` on `options.task`, heads ranked by `scores_path` or by
    importance on `rank_task` (default: the evaluated task) over `rank_options` data,
    estimated by `estimator` (see `headcount.estimators`; also on every step of the
    iterative schedule).

    `order` other than "importance" (see `headcount.orders`) prunes in a random or
    layer-location order instead and needs no scores or ranking data: one curve per draw d
    in 0..draws-1, the order drawn with seed `options.seed + d`, every draw evaluated on the
    same examples. Rows carry `order` and `draw`; `summarize_draws` averages over draws.
    `draws=None`: 5 for the random order, else 1.

    Example:
        >>> rows = curve_job("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"),
        ...                  rank_options=DataOptions("sst2", data_dir=glue, fraction=0.2))
        >>> random = curve_job("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"),
        ...                    order="random", draws=5)
    """
    check_order(order)
    if draws is None:
        # Random orders differ much from draw to draw; the layer orders only in their seeded
        # start/parity and head order within a layer, importance not at all.
        draws = 5 if order == "random" else 1
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"--draws {draws} must be a whole number >= 1")
    if order == "importance" and draws != 1:
        raise ConfigError(f"--draws {draws}: the importance order is not drawn at random; "
                          "draws apply to --order random and the layer orders")
    if order != "importance":
        for flag, given in (("--scores", scores_path), ("--rank-task", rank_task),
                            ("--normalize", normalize_method)):
            if given:
                raise ConfigError(f"--order {order} does not use {flag}")
        if schedule == "iterative":
            raise ConfigError(f"--order {order} is fixed in advance: the iterative schedule "
                              "re-estimates importance; use --schedule one-shot")
    if scores_path and rank_task:
        raise ConfigError("give either --scores or --rank-task, not both")
    check_estimator(estimator)
    if estimator != "gradient" and (scores_path or order != "importance"):
        raise ConfigError(f"--estimator {estimator} ranks heads on --rank-task data; "
                          + ("a scores file was estimated already (headcount importance "
                             "--estimator)" if scores_path else f"--order {order} uses none"))
    if scores_path and schedule == "iterative":
        raise ConfigError("the iterative schedule re-estimates importance: use --rank-task, "
                          "not --scores")
    if normalize_method is not None:
        check_normalization(normalize_method)
    prepared = prepare_task(model, options, device=device)
    loaded, evaluate_model = prepared.loaded, prepared.evaluate

    requested = None if ratios is None else sorted({0.0, *ratios})
    if order != "importance":
        return _order_curves(loaded.model, evaluate_model, model, options, order, draws,
                             schedule=schedule, ratios=requested,
                             keep_one_per_layer=keep_one_per_layer, physical=physical,
                             progress=progress)
    scores, rank, rank_model, rank_name = None, None, None, None
    if scores_path:
        scores, record = read_scores(scores_path, loaded.model)
        normalize_method = normalize_method or record.get("normalize", "l1")
        rank_name = f"scores:{record.get('task', scores_path)}"
        if record.get("estimator", "gradient") != "gradient":
            rank_name += f" ({record['estimator']})"
    else:
        rank_spec = rank_task or options.task
        base = rank_options or replace(options, split="train")
        rank_data_options = replace(base, task=rank_spec)
        rank_resolved = rank_data_options.resolve()
        ranker_loaded = loaded
        if rank_spec != options.task:
            ranker_loaded = load_for_task(model, rank_resolved, device=device,
                                          seed=options.seed)
            rank_model = ranker_loaded.model
        rank_data = prepare_for(ranker_loaded, rank_resolved, rank_data_options)

        def rank(candidate):
            batches = rank_data.batches(rank_data_options.batch_size)
            return estimate_importance(candidate, batches, rank_data.kind, estimator).raw

        rank_name = rank_spec if estimator == "gradient" else f"{rank_spec} ({estimator})"
    normalize_method = normalize_method or "l1"
    points = pruning_curve(
        loaded.model, evaluate_model, scores=scores, rank=rank, rank_model=rank_model,
        normalize_method=normalize_method, schedule=schedule, ratios=requested,
        keep_one_per_layer=keep_one_per_layer, physical=physical, progress=progress,
    )
    meta = {"model": model, "task": options.task, "rank_task": rank_name,
            "normalize": normalize_method, "schedule": schedule, "seed": options.seed}
    return curve_rows(points, meta)


def _order_curves(network, evaluate_model, model: str, options: DataOptions, order: str,
                  draws: int, *, schedule: str, ratios, keep_one_per_layer: bool,
                  physical: bool, progress: bool) -> list[dict]:
    """The rows of `draws` curves of `network` pruned in `order` (seeds options.seed + d)."""
    layout = head_layout(network)
    meta = {"model": model, "task": options.task, "rank_task": f"order:{order}",
            "normalize": "none", "schedule": schedule, "seed": options.seed, "order": order}
    rows, unpruned = [], ()
    for draw in tqdm(range(draws), disable=not progress or draws == 1, desc=f"{order} draws",
                     unit="draw"):
        heads = model_head_order(network, order, seed=options.seed + draw)
        scores = order_scores(heads, layout.num_distinct_layers, layout.num_heads)
        # The unpruned point (the same heads, absent ones, in every draw) is evaluated once.
        points = pruning_curve(
            network, evaluate_model, scores=scores, normalize_method="none", ratios=ratios,
            keep_one_per_layer=keep_one_per_layer, physical=physical,
            progress=progress and draws == 1, completed=unpruned,
        )
        unpruned = points[:1]
        rows += curve_rows(points, {**meta, "draw": draw})
    return rows


def prune_job(
    model: str, scores_path: str | None, out: str, *, ratio: float | None = None,
    heads: int | None = None, normalize_method: str | None = None,
    keep_one_per_layer: bool = False, device=None, order: str | None = None, seed: int = 0,
) -> dict:
    """Remove the least important heads of a checkpoint (by `scores_path`), or the first
    heads of a random or layer-location `order` drawn with `seed` (see `headcount.orders`),
    and save it to `out`.

    Example:
        >>> prune_job("ckpt/", None, "pruned/", order="top", ratio=0.5)["removed"]
    """
    if (scores_path is None) == (order is None):
        raise ConfigError("give exactly one of --scores and --order")
    if order is not None:
        check_order(order)
        if order == "importance":
            raise ConfigError("--order importance needs scores: use --scores scores.json")
        if normalize_method is not None:
            raise ConfigError(f"--order {order} does not use --normalize")
    if (ratio is None) == (heads is None):
        raise ConfigError("give exactly one of --ratio and --heads")
    if ratio is not None and not 0 <= ratio <= 1:
        raise ConfigError(f"--ratio {ratio} is outside [0, 1]")
    if normalize_method is not None:
        check_normalization(normalize_method)
    check_empty_target(out)
    loaded = load_model(model, CHECKPOINT_HEAD, device=device or "cpu")
    layout = head_layout(loaded.model)
    if order is None:
        scores, record = read_scores(scores_path, loaded.model)
        normalize_method = normalize_method or record.get("normalize", "l1")
    else:
        scores = order_scores(model_head_order(loaded.model, order, seed),
                              layout.num_distinct_layers, layout.num_heads)
        normalize_method = "none"  # the scores are positions in the order
    count = round(ratio * layout.total_heads) if ratio is not None else heads
    absent = [(layer, head) for layer, kept in enumerate(layout.kept)
              for head in range(layout.num_heads) if head not in kept]
    limit = prunable_heads(layout, keep_one_per_layer)
    if not 0 <= count <= limit:
        raise ConfigError(
            f"cannot prune {count} heads: this model allows 0..{limit}"
            + (" (ALBERT keeps at least one shared head)" if layout.shared_layers else "")
        )
    remaining = {layer: len(kept) for layer, kept in enumerate(layout.kept)}
    candidates = least_important_first(normalize(scores, normalize_method),
                                       exclude=set(absent))
    chosen = take_heads(candidates, max(count - len(absent), 0), remaining, keep_one_per_layer)
    before = sum(p.numel() for p in loaded.model.parameters())
    remove_heads(loaded.model, chosen)
    after = sum(p.numel() for p in loaded.model.parameters())
    save_pruned_atomically(loaded.model, out, loaded.tokenizer)
    return {
        "model": model, "out": out, "scores": scores_path, "order": order or "importance",
        "seed": seed if order is not None else None, "normalize": normalize_method,
        "heads_removed": len(chosen), "heads_remaining": head_layout(loaded.model).heads_remaining,
        "parameters_before": before, "parameters_after": after,
        "removed": heads_text(chosen),
    }
