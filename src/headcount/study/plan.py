"""The study's units in dependency order, and the tidy rows each contributes.

Per model: its masked-LM checkpoint (fitted if asked), then per seed the pre-train
importance and curves; per task and seed the fine-tuned checkpoint, downstream importance
and curves, drift, correlation, freezing and pruned fine-tuning; then recall over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

import torch

from headcount.importance import normalize
from headcount.io import read_json_record
from headcount.study import companion
from headcount.study.config import ModelSpec, TaskSpec
from headcount.study.units import (
    Run,
    _mlm_options,
    _options,
    curve_unit,
    evaluation_unit,
    finetune_unit,
    importance_unit,
    mlm_checkpoint,
)

MLM = "mlm"


def importance_rows(model: str, task: str, seed: int, record: dict,
                    normalizations) -> list[dict]:
    raw = torch.tensor(record["raw_scores"])
    normalised = {method: normalize(raw, method) for method in ("l1", "l2", "none")}
    return [
        {"model": model, "task": task, "seed": seed, "layer": layer, "head": head,
         "raw": float(raw[layer, head]),
         **{method: float(normalised[method][layer, head]) for method in normalised}}
        for layer in range(raw.shape[0]) for head in range(raw.shape[1])
    ]


def finetune_rows(model: str, task: str, seed: int, record: dict, kind: str,
                  freeze_layers: int = 0) -> list[dict]:
    return [
        {"model": model, "task": task, "seed": seed, "kind": kind,
         "freeze_layers": freeze_layers, "metric": metric, "value": value,
         "main": metric == record["main_metric"], "steps": record.get("steps"),
         "seconds": record.get("seconds"),
         "examples_per_second": record.get("examples_per_second")}
        for metric, value in record["metrics"].items()
    ]


def _training_config(run: Run, seed: int, freeze_layers: int = 0):
    from headcount.training import TrainingConfig

    spec = run.config.finetune
    return TrainingConfig(epochs=spec.epochs, learning_rate=spec.lr, batch_size=spec.batch_size,
                          warmup=spec.warmup, weight_decay=spec.weight_decay,
                          max_steps=spec.max_steps, freeze_layers=freeze_layers, seed=seed)


def _train_options(run: Run, task: TaskSpec, seed: int):
    spec = run.config.finetune
    return _options(task, split=task.train_split, fraction=spec.train_fraction,
                    max_examples=spec.train_max_examples, seed=seed,
                    batch_size=spec.batch_size, max_length=spec.max_length)


def freezing_result(run: Run, model: ModelSpec, task: TaskSpec, seed: int, layers: int) -> dict:
    from headcount.jobs.train import finetune_job

    return finetune_job(model.path, _train_options(run, task, seed),
                        _training_config(run, seed, layers), None,
                        eval_split=task.eval_split, device=run.config.device)


def _drift_rows(model: str, task: str, seed: int, record: dict):
    heads = [{"model": model, "task": task, "seed": seed, "layer": layer, "head": head,
              "js": value}
             for layer, row in enumerate(record["js"]) for head, value in enumerate(row)]
    layers = [{"model": model, "task": task, "seed": seed, "layer": layer,
               "js_mean": record["js_layer_mean"][layer], "js_max": record["js_layer_max"][layer],
               "l2": record["l2"][layer]}
              for layer in range(len(record["l2"]))]
    return heads, layers


def _correlation_rows(run: Run, model: str, task: str, seed: int, drift: dict,
                      scores: dict[str, dict]) -> list[dict]:
    from headcount.correlation import correlation_record

    rows = []
    for kind, record in scores.items():
        raw = torch.tensor(record["raw_scores"])
        for method in run.config.importance.normalizations:
            normalised = {**record, "scores": normalize(raw, method).tolist()}
            result = correlation_record(normalised, drift, names=(kind, "drift"))
            rows.append({"model": model, "task": task, "seed": seed, "importance": kind,
                         "normalize": method,
                         **{key: result.get(key) for key in (
                             "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p",
                             "slope", "intercept")}})
    return rows


def run_all(run: Run) -> tuple[dict[str, list[dict]], list[str]]:
    """Every unit of the study (finished ones skipped); the tables and the report's notes."""
    config = run.config
    tables: dict[str, list[dict]] = defaultdict(list)
    notes: list[str] = []
    normalizations = config.importance.normalizations
    imp, prune, analyses = config.importance, config.pruning, config.analyses
    for model in config.models:
        freezing = analyses.freezing
        shares_layers = bool(freezing or config.orders.names) and _shares_layers(model)
        if freezing and shares_layers:
            notes.append(f"{model.name}: its layers share one set of weights (ALBERT), so the "
                         "freezing experiment (freeze the lowest K layers) does not apply.")
            freezing = ()
        mlm_path = mlm_checkpoint(run, model)
        if model.fit_mlm_head:
            fitted = read_json_record(run.path("mlm-head", model.name, "mlm_head.json"),
                                      "MLM head record")
            held_out = fitted["held_out"]
            notes.append(
                f"{model.name} has no masked-LM head: one was fitted on its frozen encoder "
                f"(headcount fit-mlm-head, {fitted['steps']} steps on {fitted['text']}); "
                f"held-out recall@1 {held_out['before']['recall@1']:.3f} -> "
                f"{held_out['after']['recall@1']:.3f}. The pre-train (masked-LM) results "
                "use this head.")
        pretrain_curves: dict[str, list[dict]] = defaultdict(list)
        downstream_curves: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for seed in config.seeds:
            mlm_scores = importance_unit(
                run, f"{model.name} masked LM (seed {seed})", mlm_path,
                _mlm_options(config, split="train", fraction=config.pretrain.importance_fraction,
                             max_examples=config.pretrain.importance_max_examples, seed=seed,
                             batch_size=imp.batch_size),
                run.path("importance", model.name, MLM, f"seed-{seed}.json"))
            tables["importance"] += importance_rows(model.name, MLM, seed, mlm_scores,
                                                    normalizations)
            curve_options = _mlm_options(config, fraction=config.pretrain.curve_fraction,
                                         max_examples=config.pretrain.curve_max_examples,
                                         seed=seed, batch_size=prune.batch_size)
            for method in normalizations:
                meta = {"model": model.name, "task": MLM, "curve": "pretrain",
                        "rank_task": MLM, "normalize": method, "schedule": prune.schedule,
                        "seed": seed}
                rows = curve_unit(run, f"{model.name} masked LM, {method} (seed {seed})",
                                  mlm_path, curve_options, mlm_scores, method,
                                  run.path("curves", model.name, MLM, method,
                                           f"seed-{seed}.json"), meta)
                tables["curves"] += rows
                pretrain_curves[method] += rows
            for task in config.tasks:
                checkpoint = str(finetune_unit(run, model, task, seed))
                tuned = read_json_record(f"{checkpoint}/metrics.json", "fine-tuning record")
                tables["finetune"] += finetune_rows(model.name, task.name, seed, tuned, "full")
                scores = importance_unit(
                    run, f"{model.name} {task.name} (seed {seed})", checkpoint,
                    _options(task, split=imp.split, fraction=imp.fraction,
                             max_examples=imp.max_examples, seed=seed,
                             batch_size=imp.batch_size, max_length=config.finetune.max_length),
                    run.path("importance", model.name, task.name, f"seed-{seed}.json"))
                tables["importance"] += importance_rows(model.name, task.name, seed, scores,
                                                        normalizations)
                eval_options = _options(task, split=prune.split, fraction=prune.fraction,
                                        max_examples=prune.max_examples, seed=seed,
                                        batch_size=prune.batch_size,
                                        max_length=config.finetune.max_length)
                for method in normalizations:
                    meta = {"model": model.name, "task": task.name, "curve": "downstream",
                            "rank_task": task.name, "normalize": method,
                            "schedule": prune.schedule, "seed": seed}
                    rows = curve_unit(run, f"{model.name} {task.name}, {method} (seed {seed})",
                                      checkpoint, eval_options, scores, method,
                                      run.path("curves", model.name, task.name, method,
                                               f"seed-{seed}.json"), meta)
                    tables["curves"] += rows
                    downstream_curves[(task.name, method)] += rows
                if analyses.drift:
                    drift = evaluation_unit(
                        run, f"drift {model.name} -> {task.name} (seed {seed})",
                        run.path("drift", model.name, task.name, f"seed-{seed}.json"),
                        partial(_drift, run, model, task, seed, checkpoint))
                    heads, layers = _drift_rows(model.name, task.name, seed, drift)
                    tables["drift_heads"] += heads
                    tables["drift_layers"] += layers
                    if analyses.correlation:
                        tables["correlation"] += _correlation_rows(
                            run, model.name, task.name, seed, drift,
                            {"downstream": scores, "pretrain": mlm_scores})
                full_value = tuned["metrics"][tuned["main_metric"]]
                for layers_frozen in freezing:
                    result = evaluation_unit(
                        run, f"{model.name} {task.name} with {layers_frozen} frozen layers "
                             f"(seed {seed})",
                        run.path("freezing", model.name, task.name, f"k{layers_frozen}",
                                 f"seed-{seed}.json"),
                        partial(freezing_result, run, model, task, seed, layers_frozen))
                    tables["finetune"] += finetune_rows(model.name, task.name, seed, result,
                                                        "frozen", layers_frozen)
                    value = result["metrics"][result["main_metric"]]
                    tables["freezing"].append({
                        "model": model.name, "task": task.name, "seed": seed,
                        "freeze_layers": layers_frozen, "metric": result["main_metric"],
                        "value": value, "full_value": full_value,
                        "relative": value / full_value if full_value else None})
                if analyses.pruned_finetune:
                    result = companion.pruned_finetune_unit(
                        run, model, task, seed, checkpoint, scores, "importance",
                        analyses.pruned_finetune)
                    tables["pruned_finetune"] += _pruned_rows(model.name, task.name, seed,
                                                              tuned, result)
                companion_units(run, tables, model, task, seed, checkpoint, tuned, scores,
                                eval_options)
            if config.estimators.names:
                estimates = companion.estimator_scores(
                    run, model, MLM, seed, mlm_path, companion.estimator_options(run, None, seed))
                heads, agreement = companion.estimator_rows(model.name, MLM, seed, estimates)
                tables["estimator_scores"] += heads
                tables["estimator_agreement"] += agreement
            if config.sparsity.levels:
                tables["sparsity"] += companion.mlm_sparsity_unit(run, model, mlm_path, seed)
        if analyses.recall:
            tables["recall"] += _recall_rows(run, model.name, pretrain_curves,
                                             downstream_curves)
        if config.orders.names and shares_layers:
            notes.append(f"{model.name}: its layers share one set of weights (ALBERT), so "
                         "the layer-location orders do not apply; only random order was run.")
    return dict(tables), notes


def companion_units(run: Run, tables: dict, model: ModelSpec, task: TaskSpec, seed: int,
                    checkpoint: str, tuned: dict, scores: dict, eval_options) -> None:
    """Pruning orders, fine-tuning after pruning with compensation, estimators and weight
    sparsity for one fine-tuned model (whichever the configuration asks for)."""
    config = run.config
    if config.orders.names:
        tables["order_curves"] += companion.order_curves(run, model, task, seed, checkpoint,
                                                         eval_options, scores)
    for order in config.orders.finetune:
        if order != "importance" and order != "random" \
                and not companion.layer_orders_apply(scores):
            continue
        for ratio in config.orders.finetune_ratios:
            result = companion.pruned_finetune_unit(run, model, task, seed, checkpoint,
                                                    scores, order, ratio)
            tables["order_finetune"] += companion.order_finetune_rows(
                model.name, task.name, seed, tuned, result)
            summary, layers, heads = companion.compensation_rows(model.name, task.name, seed,
                                                                 result)
            tables["compensation"] += summary
            tables["compensation_layers"] += layers
            tables["compensation_heads"] += heads
    if config.estimators.names:
        estimates = companion.estimator_scores(
            run, model, task.name, seed, checkpoint,
            companion.estimator_options(run, task, seed))
        heads, agreement = companion.estimator_rows(model.name, task.name, seed, estimates)
        tables["estimator_scores"] += heads
        tables["estimator_agreement"] += agreement
        if config.estimators.curves:
            tables["order_curves"] += companion.estimator_curves(
                run, model, task, seed, checkpoint, eval_options, estimates)
    spec = config.sparsity
    if spec.levels:
        metric = tuned["main_metric"]
        if spec.levels_to_finetune:  # sparsity 0 (the reference) is the study's fine-tuning
            tables["sparsity"].append({
                "model": model.name, "task": task.name, "seed": seed,
                "setting": "pruned before fine-tuning", "sparsity_requested": 0.0,
                "sparsity_achieved": None, "metric": metric,
                "value": tuned["metrics"][metric], "relative": 1.0,
                "mean_loss": tuned.get("eval_loss"), "main": True})
        for level in spec.levels_to_finetune:
            if level == 0:
                continue
            record = companion.pretrain_pruned_unit(run, model, task, seed, level)
            tables["sparsity"] += companion.pretrain_pruned_rows(model.name, task.name, seed,
                                                                 tuned, record)
        if spec.after_finetune:
            tables["sparsity"] += companion.after_finetune_sparsity_unit(
                run, model, task, seed, checkpoint, eval_options)


def _shares_layers(model: ModelSpec) -> bool:
    from headcount.arch import family_of
    from headcount.models import load_config

    return family_of(load_config(model.path)).shared_layers


def _drift(run: Run, model: ModelSpec, task: TaskSpec, seed: int, checkpoint: str) -> dict:
    from headcount.jobs.analysis import drift_job

    options = _options(task, split=task.eval_split, seed=seed,
                       max_examples=run.config.analyses.drift_max_examples,
                       batch_size=run.config.pruning.batch_size,
                       max_length=run.config.finetune.max_length)
    return drift_job(model.path, checkpoint, options, device=run.config.device)


def _pruned_rows(model: str, task: str, seed: int, tuned: dict, result: dict) -> list[dict]:
    metric = tuned["main_metric"]
    full = tuned["metrics"][metric]
    stages = [("unpruned", full), ("pruned-before", result["before"]["metrics"][metric]),
              ("pruned-after", result["after"]["metrics"][metric])]
    return [{"model": model, "task": task, "seed": seed, "ratio": result["ratio"],
             "stage": stage, "metric": metric, "value": value,
             "relative": value / full if full else None} for stage, value in stages]


def _recall_rows(run: Run, model: str, pretrain_curves, downstream_curves) -> list[dict]:
    from headcount.recall import curve_steps_from_rows, recall_rows

    rows = []
    for (task, method), downstream in downstream_curves.items():
        pretrain = curve_steps_from_rows(pretrain_curves[method], f"{model} masked LM")
        result = recall_rows(pretrain, curve_steps_from_rows(downstream, f"{model} {task}"),
                             threshold=run.config.analyses.recall_threshold)
        rows += [{"model": model, "task": task, "normalize": method, **row} for row in result]
    return rows
