"""The reference study's units for one model and seed, and the tidy rows each gives.

Masked LM: importance and pruning curves per normalisation (`pretrain_units`). Per task:
fine-tuning, downstream importance and curves, attention/feature drift and its correlation
with importance, the freezing experiment and pruned fine-tuning (`task_units`). Over seeds:
recall of the heads kept in pre-train order among those kept in downstream order
(`recall_rows`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import torch

from headcount.importance import normalize
from headcount.io import read_json_record
from headcount.study.pruned import pruned_finetune_unit
from headcount.study.units import (
    TunedModel,
    UnitContext,
    curve_unit,
    evaluation_unit,
    finetune_unit,
    importance_options,
    importance_unit,
    relative,
    task_options,
    train_options,
    training_config,
)


@dataclass
class ModelCurves:
    """The curve rows of one model over its seeds, kept for recall."""

    pretrain: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    downstream: dict[tuple[str, str], list[dict]] = field(
        default_factory=lambda: defaultdict(list))


def pretrain_units(ctx: UnitContext, mlm_path: str, tables: dict,
                   curves: ModelCurves) -> dict:
    """Masked-LM importance and its pruning curves; the importance record."""
    scores = importance_unit(ctx.run, f"{ctx.title} (seed {ctx.seed})", mlm_path,
                             importance_options(ctx), ctx.output("importance"))
    tables["importance"] += importance_rows(ctx, scores)
    _curve_units(ctx, mlm_path, scores, tables, curves)
    return scores


def task_units(ctx: UnitContext, mlm_scores: dict, freezing: tuple[int, ...], tables: dict,
               curves: ModelCurves) -> TunedModel:
    """Every reference unit of one task (`freezing`: the layer counts to freeze, none where
    they do not apply); the fine-tuned model, for the companion studies."""
    analyses = ctx.config.analyses
    checkpoint = str(finetune_unit(ctx))
    record = read_json_record(f"{checkpoint}/metrics.json", "fine-tuning record")
    tables["finetune"] += finetune_rows(ctx, record, "full")
    scores = importance_unit(ctx.run, f"{ctx.title} (seed {ctx.seed})", checkpoint,
                             importance_options(ctx), ctx.output("importance"))
    tables["importance"] += importance_rows(ctx, scores)
    tuned = TunedModel(checkpoint, record, scores)
    _curve_units(ctx, checkpoint, scores, tables, curves)
    if analyses.drift:
        _drift_units(ctx, tuned, mlm_scores, tables)
    for layers in freezing:
        _freezing_unit(ctx, tuned, layers, tables)
    if analyses.pruned_finetune:
        result = pruned_finetune_unit(ctx, tuned, "importance", analyses.pruned_finetune)
        tables["pruned_finetune"] += pruned_rows(ctx, record, result)
    return tuned


def _curve_units(ctx: UnitContext, checkpoint: str, scores: dict, tables: dict,
                 curves: ModelCurves) -> None:
    """A pruning curve per normalisation, in importance order on the context's task."""
    pretrain = ctx.task is None
    for method in ctx.config.importance.normalizations:
        meta = {"model": ctx.model.name, "task": ctx.task_name,
                "curve": "pretrain" if pretrain else "downstream", "rank_task": ctx.task_name,
                "normalize": method, "schedule": ctx.config.pruning.schedule, "seed": ctx.seed}
        rows = curve_unit(ctx, f"{ctx.title}, {method} (seed {ctx.seed})", checkpoint, scores,
                          method, ctx.output("curves", method), meta)
        tables["curves"] += rows
        if pretrain:
            curves.pretrain[method] += rows
        else:
            curves.downstream[(ctx.task_name, method)] += rows


def _drift_units(ctx: UnitContext, tuned: TunedModel, mlm_scores: dict, tables: dict) -> None:
    """Attention and feature drift of fine-tuning, and (if asked) its correlation with the
    downstream and pre-train importance."""
    drift = evaluation_unit(
        ctx.run, f"drift {ctx.model.name} -> {ctx.task_name} (seed {ctx.seed})",
        ctx.output("drift"), partial(_drift, ctx, tuned.checkpoint))
    heads, layers = drift_rows(ctx, drift)
    tables["drift_heads"] += heads
    tables["drift_layers"] += layers
    if ctx.config.analyses.correlation:
        tables["correlation"] += correlation_rows(
            ctx, drift, {"downstream": tuned.scores, "pretrain": mlm_scores})


def _drift(ctx: UnitContext, checkpoint: str) -> dict:
    from headcount.jobs.analysis import drift_job

    config = ctx.config
    options = task_options(ctx.task, split=ctx.task.eval_split, seed=ctx.seed,
                           max_examples=config.analyses.drift_max_examples,
                           batch_size=config.pruning.batch_size,
                           max_length=config.finetune.max_length)
    return drift_job(ctx.model.path, checkpoint, options, device=config.device)


def _freezing_unit(ctx: UnitContext, tuned: TunedModel, layers: int, tables: dict) -> None:
    """Fine-tuning with the embeddings and the lowest `layers` layers frozen, against full
    fine-tuning."""
    result = evaluation_unit(
        ctx.run, f"{ctx.title} with {layers} frozen layers (seed {ctx.seed})",
        ctx.output("freezing", f"k{layers}"), partial(freezing_result, ctx, layers))
    tables["finetune"] += finetune_rows(ctx, result, "frozen", layers)
    value = result["metrics"][result["main_metric"]]
    tables["freezing"].append({
        **ctx.key, "freeze_layers": layers, "metric": result["main_metric"], "value": value,
        "full_value": tuned.main_value, "relative": relative(value, tuned.main_value)})


def freezing_result(ctx: UnitContext, layers: int) -> dict:
    from headcount.jobs.train import finetune_job

    return finetune_job(ctx.model.path, train_options(ctx), training_config(ctx, layers), None,
                        eval_split=ctx.task.eval_split, device=ctx.config.device)


# --------------------------------------------------------------------------- rows


def importance_rows(ctx: UnitContext, record: dict) -> list[dict]:
    """One row per head: its raw importance and every normalisation of it."""
    raw = torch.tensor(record["raw_scores"])
    normalised = {method: normalize(raw, method) for method in ("l1", "l2", "none")}
    return [
        {**ctx.key, "layer": layer, "head": head, "raw": float(raw[layer, head]),
         **{method: float(normalised[method][layer, head]) for method in normalised}}
        for layer in range(raw.shape[0]) for head in range(raw.shape[1])
    ]


def finetune_rows(ctx: UnitContext, record: dict, kind: str,
                  freeze_layers: int = 0) -> list[dict]:
    """One row per metric; with the training loss over the last two quarters of the steps
    (the report judges from them whether the run had converged)."""
    quarters = record.get("train_loss_quarters") or []
    last_two = quarters[-2:] if len(quarters) >= 2 else [None, None]
    return [
        {**ctx.key, "kind": kind, "freeze_layers": freeze_layers, "metric": metric,
         "value": value, "main": metric == record["main_metric"], "steps": record.get("steps"),
         "seconds": record.get("seconds"),
         "examples_per_second": record.get("examples_per_second"),
         "loss_previous_quarter": last_two[0], "loss_last_quarter": last_two[1]}
        for metric, value in record["metrics"].items()
    ]


def drift_rows(ctx: UnitContext, record: dict) -> tuple[list[dict], list[dict]]:
    """(one row per head: its Jensen-Shannon divergence, one row per layer: mean and max of
    it and the feature drift)."""
    heads = [{**ctx.key, "layer": layer, "head": head, "js": value}
             for layer, row in enumerate(record["js"]) for head, value in enumerate(row)]
    layers = [{**ctx.key, "layer": layer, "js_mean": record["js_layer_mean"][layer],
               "js_max": record["js_layer_max"][layer], "l2": record["l2"][layer]}
              for layer in range(len(record["l2"]))]
    return heads, layers


def correlation_rows(ctx: UnitContext, drift: dict, scores: dict[str, dict]) -> list[dict]:
    """Correlation of each kind of importance (each normalisation) with attention drift."""
    from headcount.correlation import correlation_record

    rows = []
    for kind, record in scores.items():
        raw = torch.tensor(record["raw_scores"])
        for method in ctx.config.importance.normalizations:
            normalised = {**record, "scores": normalize(raw, method).tolist()}
            result = correlation_record(normalised, drift, names=(kind, "drift"))
            rows.append({**ctx.key, "importance": kind, "normalize": method,
                         **{key: result.get(key) for key in (
                             "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p",
                             "slope", "intercept")}})
    return rows


def pruned_rows(ctx: UnitContext, tuned: dict, result: dict) -> list[dict]:
    metric = tuned["main_metric"]
    full = tuned["metrics"][metric]
    stages = [("unpruned", full), ("pruned-before", result["before"]["metrics"][metric]),
              ("pruned-after", result["after"]["metrics"][metric])]
    return [{**ctx.key, "ratio": result["ratio"], "stage": stage, "metric": metric,
             "value": value, "relative": relative(value, full)} for stage, value in stages]


def recall_rows(model: str, curves: ModelCurves, threshold: float) -> list[dict]:
    """Recall over seeds per task and normalisation, from the model's curve rows."""
    from headcount.recall import curve_steps_from_rows
    from headcount.recall import recall_rows as recall_of

    rows = []
    for (task, method), downstream in curves.downstream.items():
        pretrain = curve_steps_from_rows(curves.pretrain[method], f"{model} masked LM")
        result = recall_of(pretrain, curve_steps_from_rows(downstream, f"{model} {task}"),
                           threshold=threshold)
        rows += [{"model": model, "task": task, "normalize": method, **row} for row in result]
    return rows
