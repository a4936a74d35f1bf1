"""The companion studies inside a study run: pruning orders (random, layer location) against
importance order, fine-tuning after pruning and compensation (Budhraja et al.), importance
estimators against exact ablation, and weight-magnitude pruning (Gordon et al.).

`task_units` runs them for one fine-tuned model, `pretrain_units` for the masked LM of one
model and seed. Every unit is saved atomically under RUN_DIR/units/ like the rest of the
study, so a killed run resumes here too.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch

from headcount.study.pruned import order_seed, pruned_finetune_unit
from headcount.study.units import (
    TunedModel,
    UnitContext,
    curve_options,
    curve_unit,
    evaluation_unit,
    importance_options,
    importance_unit,
    ratio_text,
    relative,
    train_options,
    training_config,
)


def task_units(ctx: UnitContext, tuned: TunedModel, tables: dict) -> None:
    """Pruning orders, fine-tuning after pruning with compensation, estimators and weight
    sparsity for one fine-tuned model (whichever the configuration asks for)."""
    config = ctx.config
    if config.orders.names:
        tables["order_curves"] += order_curves(ctx, tuned)
    _order_finetune_units(ctx, tuned, tables)
    if config.estimators.names:
        estimator_units(ctx, tuned.checkpoint, tables)
    if config.sparsity.levels:
        _sparsity_units(ctx, tuned, tables)


def pretrain_units(ctx: UnitContext, mlm_path: str, tables: dict) -> None:
    """Estimators and weight sparsity on the masked LM (whichever the configuration asks
    for)."""
    if ctx.config.estimators.names:
        estimator_units(ctx, mlm_path, tables)
    if ctx.config.sparsity.levels:
        tables["sparsity"] += mlm_sparsity_unit(ctx, mlm_path)


def order_draws(ctx: UnitContext, order: str) -> int:
    """Random order: the configured draws per seed; every other order: one per seed."""
    return ctx.config.orders.draws if order == "random" else 1


def layer_orders_apply(record: dict) -> bool:
    """Layer-location orders need distinct layers (not ALBERT's one shared layer)."""
    return not record.get("shared_across_layers", False)


# --------------------------------------------------------------------------- orders


def order_curves(ctx: UnitContext, tuned: TunedModel) -> list[dict]:
    """Pruning curves of the fine-tuned model in every configured order (random: several
    draws), on the same examples and ratios as the importance curves."""
    from headcount.choices import LAYER_ORDERS
    from headcount.orders import head_order, order_scores

    # One pseudo-score grid per kind that the curves prune, of the shape of its scores.
    shapes = {field: torch.tensor(tuned.scores[field]).shape
              for field in ("raw_scores", "neuron_raw_scores") if field in tuned.scores}
    rows = []
    for order in ctx.config.orders.names:
        if order in LAYER_ORDERS and not layer_orders_apply(tuned.scores):
            continue
        for draw in range(order_draws(ctx, order)):
            seed = order_seed(ctx.seed, draw)
            pseudo = {field: order_scores(head_order(order, *shape, seed), *shape).tolist()
                      for field, shape in shapes.items()}
            meta = {"model": ctx.model.name, "task": ctx.task_name, "curve": "downstream",
                    "order": order, "family": "order", "draw": draw,
                    "rank_task": f"order:{order}", "normalize": "none",
                    "schedule": "one-shot", "seed": ctx.seed}
            rows += curve_unit(
                ctx, f"{ctx.title}, {order} order draw {draw} (seed {ctx.seed})",
                tuned.checkpoint, pseudo, "none",
                ctx.output("curves-orders", order, name=f"seed-{ctx.seed}-draw-{draw}.json"),
                meta)
    return rows


def _order_finetune_units(ctx: UnitContext, tuned: TunedModel, tables: dict) -> None:
    """Fine-tuning after pruning in each configured order and ratio, with compensation."""
    orders = ctx.config.orders
    for order in orders.finetune:
        if order not in ("importance", "random") and not layer_orders_apply(tuned.scores):
            continue
        for ratio in orders.finetune_ratios:
            result = pruned_finetune_unit(ctx, tuned, order, ratio)
            tables["order_finetune"] += order_finetune_rows(ctx, tuned.record, result)
            summary, layers, heads = compensation_rows(ctx.model.name, ctx.task_name, ctx.seed,
                                                       result)
            tables["compensation"] += summary
            tables["compensation_layers"] += layers
            tables["compensation_heads"] += heads


def order_finetune_rows(ctx: UnitContext, tuned: dict, result: dict) -> list[dict]:
    metric = tuned["main_metric"]
    full = tuned["metrics"][metric]
    return [{**ctx.key, "order": result["order"], "ratio": result["ratio"], "stage": stage,
             "metric": metric, "value": result[stage]["metrics"][metric],
             "relative": relative(result[stage]["metrics"][metric], full)}
            for stage in ("before", "after")]


def compensation_rows(model: str, task: str, seed: int,
                      result: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(summary row, per-layer rows, per-head rows) of one pruned fine-tuning. The summaries
    are computed again from the saved per-head importance, so that they always follow the
    current definitions (`headcount.compensation`)."""
    from headcount.compensation import compensation_record

    saved = result.get("compensation")
    if saved is None:
        return [], [], []
    heads = saved["per_head"]
    layers = 1 + max((h["layer"] for h in heads), default=-1)
    width = 1 + max((h["head"] for h in heads), default=-1)
    # Layers that lost every head have no per-head rows: size the grid from per_layer.
    rows = max(layers, len(saved["per_layer"]))
    before = torch.zeros(rows, width, dtype=torch.float64)
    after = torch.zeros(rows, width, dtype=torch.float64)
    kept: list[list[int]] = [[] for _ in range(len(saved["per_layer"]))]
    for h in heads:
        before[h["layer"], h["head"]] = h["before"]
        after[h["layer"], h["head"]] = h["after"]
        kept[h["layer"]].append(h["head"])
    record = compensation_record(before, after, kept)
    key = {"model": model, "task": task, "seed": seed, "order": result["order"],
           "ratio": result["ratio"]}
    summary = {**key, **{name: record[name] for name in (
        "heads_remaining", "total_before", "total_after", "total_share_gain", "heads_gaining",
        "top10_share", "gini")}}
    return ([summary], [{**key, **row} for row in record["per_layer"]],
            [{**key, **row} for row in record["per_head"]])


# --------------------------------------------------------------------------- estimators


def estimator_units(ctx: UnitContext, checkpoint: str, tables: dict) -> None:
    """Every configured estimator's scores and agreement with ablation; on a downstream task
    also the pruning curves in each estimator's order (if configured)."""
    estimates = estimator_scores(ctx, checkpoint)
    heads, agreement = estimator_rows(ctx.model.name, ctx.task_name, ctx.seed, estimates)
    tables["estimator_scores"] += heads
    tables["estimator_agreement"] += agreement
    if ctx.task is not None and ctx.config.estimators.curves:
        tables["order_curves"] += estimator_curves(ctx, checkpoint, estimates)


def estimator_scores(ctx: UnitContext, checkpoint: str) -> dict[str, dict]:
    """Every configured estimator's scores (and gradient's, as the reference of the
    study) on the same examples: the importance data, at most [estimators].max_examples."""
    options = importance_options(ctx, ctx.config.estimators.max_examples)
    return {estimator: importance_unit(
                ctx.run, f"{ctx.model.name} {ctx.task_name} by {estimator} (seed {ctx.seed})",
                checkpoint, options, ctx.output("importance-estimators", estimator), estimator)
            for estimator in ("gradient", *ctx.config.estimators.names)}


def estimator_rows(model: str, task: str, seed: int,
                   estimates: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(one row per head and estimator, one row per estimator with its agreement with
    exact ablation: Spearman's ρ and Pearson's r over all heads present)."""
    from headcount.correlation import correlate

    heads = [{"model": model, "task": task, "seed": seed, "estimator": estimator,
              "layer": layer, "head": head, "score": value}
             for estimator, record in estimates.items()
             for layer, row in enumerate(record["raw_scores"])
             for head, value in enumerate(row)]
    reference = estimates.get("ablation")
    if reference is None:
        return heads, []
    truth = [v for row in reference["raw_scores"] for v in row]
    agreement = []
    for estimator, record in estimates.items():
        if estimator == "ablation":
            continue
        values = [v for row in record["raw_scores"] for v in row]
        result = correlate(values, truth)
        agreement.append({"model": model, "task": task, "seed": seed,
                          "estimator": estimator, "reference": "ablation",
                          "n": len(values), "spearman_rho": result["spearman_rho"],
                          "spearman_p": result["spearman_p"],
                          "pearson_r": result["pearson_r"],
                          "seconds": record.get("seconds"),
                          "reference_seconds": reference.get("seconds")})
    return heads, agreement


def estimator_curves(ctx: UnitContext, checkpoint: str,
                     estimates: dict[str, dict]) -> list[dict]:
    """Pruning curves ordered by each extra estimator's (raw) scores; the estimators score
    heads, so these curves prune heads only whatever `[pruning] units` says."""
    rows = []
    for estimator, record in estimates.items():
        if estimator == "gradient":
            continue  # the study's main curves already prune by gradient importance
        meta = {"model": ctx.model.name, "task": ctx.task_name, "curve": "downstream",
                "order": estimator, "family": "estimator", "draw": 0,
                "rank_task": ctx.task_name, "normalize": "none", "schedule": "one-shot",
                "seed": ctx.seed}
        rows += curve_unit(
            ctx, f"{ctx.title}, ordered by {estimator} (seed {ctx.seed})", checkpoint, record,
            "none", ctx.output("curves-estimators", estimator), meta, units="heads")
    return rows


# --------------------------------------------------------------------------- sparsity


def _sparsity_units(ctx: UnitContext, tuned: TunedModel, tables: dict) -> None:
    """The fine-tuned model's row at sparsity 0, the pre-trained model pruned before
    fine-tuning at each level, and the fine-tuned model pruned afterwards."""
    spec = ctx.config.sparsity
    if spec.levels_to_finetune:  # sparsity 0 (the reference) is the study's fine-tuning
        metric = tuned.record["main_metric"]
        tables["sparsity"].append({
            **ctx.key, "setting": "pruned before fine-tuning", "sparsity_requested": 0.0,
            "sparsity_achieved": None, "metric": metric, "value": tuned.main_value,
            "relative": 1.0, "mean_loss": tuned.record.get("eval_loss"), "main": True})
    for level in spec.levels_to_finetune:
        if level != 0:
            record = pretrain_pruned_unit(ctx, level)
            tables["sparsity"] += pretrain_pruned_rows(ctx, tuned.record, record)
    if spec.after_finetune:
        tables["sparsity"] += after_finetune_sparsity_unit(ctx, tuned.checkpoint)


def sparsity_rows(ctx: UnitContext, setting: str, rows: list[dict]) -> list[dict]:
    return [{**ctx.key, "setting": setting, **row} for row in rows]


def mlm_sparsity_unit(ctx: UnitContext, mlm_path: str) -> list[dict]:
    """Masked-LM loss and recall@1 of the pre-trained model at every sparsity level."""
    record = evaluation_unit(ctx.run, f"{ctx.title} at sparsity levels (seed {ctx.seed})",
                             ctx.output("sparsity"), partial(_sparsity_sweep, ctx, mlm_path))
    return sparsity_rows(ctx, "pre-trained", record["rows"])


def after_finetune_sparsity_unit(ctx: UnitContext, checkpoint: str) -> list[dict]:
    """The fine-tuned model pruned at every level (no training afterwards)."""
    record = evaluation_unit(
        ctx.run, f"{ctx.title}: fine-tuned, then weights pruned (seed {ctx.seed})",
        ctx.output("sparsity", "after-finetune"), partial(_sparsity_sweep, ctx, checkpoint))
    return sparsity_rows(ctx, "pruned after fine-tuning", record["rows"])


def _sparsity_sweep(ctx: UnitContext, checkpoint: str) -> dict:
    from headcount.jobs.prepared import prepare_task
    from headcount.weight_pruning import sparsity_curve

    spec = ctx.config.sparsity
    prepared = prepare_task(checkpoint, curve_options(ctx), device=ctx.config.device)
    rows = sparsity_curve(prepared.model, prepared.evaluate, spec.levels, spec.scope)
    return {"scope": spec.scope, "rows": rows}


def pretrain_pruned_unit(ctx: UnitContext, level: float) -> dict:
    """The pre-trained model with `level` of its encoder weights pruned by magnitude, then
    fine-tuned on the task with the pruned weights held at zero."""
    label = (f"{ctx.title}: weights pruned to {ratio_text(level)} before fine-tuning "
             f"(seed {ctx.seed})")
    output = ctx.output("sparsity", "pretrain-pruned", f"level-{ratio_text(level)}")
    return evaluation_unit(ctx.run, label, output, partial(_pretrain_pruned, ctx, level))


def _pretrain_pruned(ctx: UnitContext, level: float) -> dict:
    from headcount.jobs.prepared import load_for_task
    from headcount.jobs.train import train_and_score
    from headcount.weight_pruning import apply_masks, magnitude_masks, sparsity_report

    spec = ctx.config.sparsity
    options = train_options(ctx)
    resolved = options.resolve()
    with warnings.catch_warnings():
        # The pre-trained checkpoint has no task head yet: training one is the point here.
        warnings.filterwarnings("ignore", ".*no trained classification head", UserWarning)
        loaded = load_for_task(ctx.model.path, resolved, device=ctx.config.device,
                               seed=ctx.seed, options=options)
    masks = magnitude_masks(loaded.model, level, spec.scope)
    apply_masks(loaded.model, masks)
    pruned = sparsity_report(loaded.model)
    scores = train_and_score(loaded, resolved, options, training_config(ctx),
                             eval_split=ctx.task.eval_split, weight_masks=masks)
    kept = sparsity_report(loaded.model)
    return {"level": level, "scope": spec.scope, "sparsity_before_training": pruned["sparsity"],
            "sparsity_after_training": kept["sparsity"], **scores}


def pretrain_pruned_rows(ctx: UnitContext, tuned: dict, record: dict) -> list[dict]:
    metric = tuned["main_metric"]
    value = record["metrics"][metric]
    return [{**ctx.key, "setting": "pruned before fine-tuning",
             "sparsity_requested": record["level"],
             "sparsity_achieved": record["sparsity_after_training"], "metric": metric,
             "value": value, "relative": relative(value, tuned["metrics"][metric]),
             "mean_loss": record.get("eval_loss"), "main": True}]
