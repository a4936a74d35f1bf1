"""The companion studies inside a study run: pruning orders (random, layer location) against
importance order, fine-tuning after pruning and compensation (Budhraja et al.), importance
estimators against exact ablation, and weight-magnitude pruning (Gordon et al.).

Every unit is saved atomically under RUN_DIR/units/ like the rest of the study, so a killed
run resumes here too. Seeds: the order of a (study seed s, draw d) is drawn with seed
1000·s + d, so that draws of different study seeds never repeat each other.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch

from headcount.importance import normalize
from headcount.study.config import ModelSpec, TaskSpec
from headcount.study.units import (
    Run,
    _mlm_options,
    _options,
    curve_unit,
    evaluation_unit,
    importance_unit,
)

MLM = "mlm"
SEED_STRIDE = 1000


def order_seed(seed: int, draw: int) -> int:
    return SEED_STRIDE * seed + draw


def order_draws(run: Run, order: str) -> int:
    """Random order: the configured draws per seed; every other order: one per seed."""
    return run.config.orders.draws if order == "random" else 1


def ratio_text(ratio: float) -> str:
    return f"{ratio:g}"


def layer_orders_apply(record: dict) -> bool:
    """Layer-location orders need distinct layers (not ALBERT's one shared layer)."""
    return not record.get("shared_across_layers", False)


def pruned_heads_for(order: str, scores: dict, count: int, method: str, seed: int):
    """The first `count` heads of `order` on a model with the scores' head grid."""
    from headcount.orders import head_order
    from headcount.pruning import least_important_first, take_heads

    raw = torch.tensor(scores["raw_scores"])
    layers, heads = raw.shape
    if order == "importance":
        candidates = least_important_first(normalize(raw, method))
    else:
        candidates = head_order(order, layers, heads, seed)
    return take_heads(candidates, count, {layer: heads for layer in range(layers)}, False)


# --------------------------------------------------------------------------- curves


def order_curves(run: Run, model: ModelSpec, task: TaskSpec, seed: int, checkpoint: str,
                 eval_options, scores: dict) -> list[dict]:
    """Pruning curves of the fine-tuned model in every configured order (random: several
    draws), on the same examples and ratios as the importance curves."""
    from headcount.choices import LAYER_ORDERS
    from headcount.orders import head_order, order_scores

    raw = torch.tensor(scores["raw_scores"])
    layers, heads = raw.shape
    rows = []
    for order in run.config.orders.names:
        if order in LAYER_ORDERS and not layer_orders_apply(scores):
            continue
        for draw in range(order_draws(run, order)):
            pseudo = order_scores(head_order(order, layers, heads, order_seed(seed, draw)),
                                  layers, heads)
            meta = {"model": model.name, "task": task.name, "curve": "downstream",
                    "order": order, "family": "order", "draw": draw,
                    "rank_task": f"order:{order}", "normalize": "none",
                    "schedule": "one-shot", "seed": seed}
            rows += curve_unit(
                run, f"{model.name} {task.name}, {order} order draw {draw} (seed {seed})",
                checkpoint, eval_options, {"raw_scores": pseudo.tolist()}, "none",
                run.path("curves-orders", model.name, task.name, order,
                         f"seed-{seed}-draw-{draw}.json"), meta)
    return rows


def estimator_curves(run: Run, model: ModelSpec, task: TaskSpec, seed: int, checkpoint: str,
                     eval_options, estimates: dict[str, dict]) -> list[dict]:
    """Pruning curves ordered by each extra estimator's (raw) scores."""
    rows = []
    for estimator, record in estimates.items():
        if estimator == "gradient":
            continue  # the study's main curves already prune by gradient importance
        meta = {"model": model.name, "task": task.name, "curve": "downstream",
                "order": estimator, "family": "estimator", "draw": 0,
                "rank_task": task.name, "normalize": "none", "schedule": "one-shot",
                "seed": seed}
        rows += curve_unit(
            run, f"{model.name} {task.name}, ordered by {estimator} (seed {seed})",
            checkpoint, eval_options, record, "none",
            run.path("curves-estimators", model.name, task.name, estimator,
                     f"seed-{seed}.json"), meta)
    return rows


# --------------------------------------------------------------------------- estimators


def estimator_scores(run: Run, model: ModelSpec, task_name: str, seed: int, checkpoint: str,
                     options) -> dict[str, dict]:
    """Every configured estimator's scores (and gradient's, as the reference of the
    study) on the same examples."""
    return {estimator: importance_unit(
                run, f"{model.name} {task_name} by {estimator} (seed {seed})", checkpoint,
                options, run.path("importance-estimators", model.name, task_name, estimator,
                                  f"seed-{seed}.json"), estimator)
            for estimator in ("gradient", *run.config.estimators.names)}


def estimator_rows(model: str, task: str, seed: int,
                   estimates: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(one row per head and estimator, one row per estimator with its agreement with
    exact ablation: Spearman's ρ and Pearson's r over all heads present)."""
    from headcount.correlation import correlate

    heads = []
    for estimator, record in estimates.items():
        for layer, row in enumerate(record["raw_scores"]):
            for head, value in enumerate(row):
                heads.append({"model": model, "task": task, "seed": seed,
                              "estimator": estimator, "layer": layer, "head": head,
                              "score": value})
    agreement = []
    reference = estimates.get("ablation")
    if reference is None:
        return heads, agreement
    truth = [v for row in reference["raw_scores"] for v in row]
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


def estimator_options(run: Run, task: TaskSpec | None, seed: int):
    """The examples every estimator is computed on: the importance data, at most
    [estimators].max_examples of it."""
    config = run.config
    limits = [config.estimators.max_examples]
    if task is None:
        limits.append(config.pretrain.importance_max_examples)
        cap = min((n for n in limits if n is not None), default=None)
        return _mlm_options(config, split="train", fraction=config.pretrain.importance_fraction,
                            max_examples=cap, seed=seed, batch_size=config.importance.batch_size)
    imp = config.importance
    cap = min((n for n in [*limits, imp.max_examples] if n is not None), default=None)
    return _options(task, split=imp.split, fraction=imp.fraction, max_examples=cap, seed=seed,
                    batch_size=imp.batch_size, max_length=config.finetune.max_length)


# --------------------------------------------------------------------------- fine-tuning


def pruned_finetune_unit(run: Run, model: ModelSpec, task: TaskSpec, seed: int,
                         checkpoint: str, scores: dict, order: str, ratio: float) -> dict:
    label = (f"{model.name} {task.name}: {ratio_text(ratio)} of heads pruned in {order} order, "
             f"fine-tuned again (seed {seed})")
    output = run.path("pruned", model.name, task.name, order, f"ratio-{ratio_text(ratio)}",
                      f"seed-{seed}.json")
    return evaluation_unit(run, label, output, partial(
        pruned_finetune_result, run, task, seed, checkpoint, scores, order, ratio))


def pruned_finetune_result(run: Run, task: TaskSpec, seed: int, checkpoint: str,
                           scores: dict, order: str, ratio: float) -> dict:
    """The fine-tuned model with `ratio` of its heads removed in `order` (importance: least
    important first by the study's first normalisation), scored before and after fine-tuning
    it again; with the importance of the remaining heads before and after (compensation)."""
    from headcount.compensation import compensation_record
    from headcount.evaluation import evaluate
    from headcount.importance import head_importance
    from headcount.jobs.prepared import load_for_task, prepare_for
    from headcount.jobs.train import train_and_score
    from headcount.removal import remove_heads
    from headcount.study.plan import _train_options, _training_config

    config = run.config
    method = config.importance.normalizations[0]
    options = _train_options(run, task, seed)
    resolved = options.resolve()
    loaded = load_for_task(checkpoint, resolved, device=config.device, seed=seed)
    raw = torch.tensor(scores["raw_scores"])
    count = round(ratio * raw.numel())
    chosen = pruned_heads_for(order, scores, count, method, order_seed(seed, 0))
    remove_heads(loaded.model, chosen)
    dev = prepare_for(loaded, resolved, _options(task, split=task.eval_split, seed=seed,
                                                 max_length=options.max_length))
    before = evaluate(loaded.model, dev.batches(options.batch_size), dev.kind, resolved.metric)
    imp = config.importance
    imp_options = _options(task, split=imp.split, fraction=imp.fraction,
                           max_examples=imp.max_examples, seed=seed, batch_size=imp.batch_size,
                           max_length=config.finetune.max_length)
    compensation = config.orders.compensation
    if compensation:
        imp_data = prepare_for(loaded, resolved, imp_options)
        importance_before = head_importance(loaded.model, imp_data.batches(imp.batch_size),
                                            imp_data.kind).raw
    after = train_and_score(loaded, resolved, options, _training_config(run, seed),
                            eval_split=task.eval_split)
    result = {"order": order, "ratio": ratio, "normalize": method, "order_seed":
              order_seed(seed, 0), "heads_removed": len(chosen),
              "removed": [list(head) for head in chosen],
              "before": {"metrics": before.metrics, "main_metric": before.main},
              "after": {"metrics": after["metrics"], "main_metric": after["main_metric"]}}
    if compensation:
        from headcount.arch import head_layout

        importance_after = head_importance(loaded.model, imp_data.batches(imp.batch_size),
                                           imp_data.kind).raw
        result["compensation"] = compensation_record(importance_before, importance_after,
                                                     head_layout(loaded.model).kept)
    return result


def order_finetune_rows(model: str, task: str, seed: int, tuned: dict,
                        result: dict) -> list[dict]:
    metric = tuned["main_metric"]
    full = tuned["metrics"][metric]
    return [{"model": model, "task": task, "seed": seed, "order": result["order"],
             "ratio": result["ratio"], "stage": stage, "metric": metric,
             "value": result[stage]["metrics"][metric],
             "relative": result[stage]["metrics"][metric] / full if full else None}
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
    before = torch.zeros(layers, width, dtype=torch.float64)
    after = torch.zeros(layers, width, dtype=torch.float64)
    kept: list[list[int]] = [[] for _ in range(len(saved["per_layer"]))]
    for h in heads:
        before[h["layer"], h["head"]] = h["before"]
        after[h["layer"], h["head"]] = h["after"]
        kept[h["layer"]].append(h["head"])
    if len(kept) > layers:  # trailing layers with no head left
        before = torch.cat([before, torch.zeros(len(kept) - layers, width,
                                                dtype=torch.float64)])
        after = torch.cat([after, torch.zeros(len(kept) - layers, width, dtype=torch.float64)])
    record = compensation_record(before, after, kept)
    key = {"model": model, "task": task, "seed": seed, "order": result["order"],
           "ratio": result["ratio"]}
    summary = {**key, **{name: record[name] for name in (
        "heads_remaining", "total_before", "total_after", "total_share_gain", "heads_gaining",
        "top10_share", "gini")}}
    layers = [{**key, **row} for row in record["per_layer"]]
    heads = [{**key, **row} for row in record["per_head"]]
    return [summary], layers, heads


# --------------------------------------------------------------------------- sparsity


def sparsity_rows(model: str, task: str, seed: int, setting: str, rows: list[dict]):
    return [{"model": model, "task": task, "seed": seed, "setting": setting, **row}
            for row in rows]


def mlm_sparsity_unit(run: Run, model: ModelSpec, mlm_path: str, seed: int) -> list[dict]:
    """Masked-LM loss and recall@1 of the pre-trained model at every sparsity level."""
    config = run.config
    options = _mlm_options(config, fraction=config.pretrain.curve_fraction,
                           max_examples=config.pretrain.curve_max_examples, seed=seed,
                           batch_size=config.pruning.batch_size)
    record = evaluation_unit(
        run, f"{model.name} masked LM at sparsity levels (seed {seed})",
        run.path("sparsity", model.name, MLM, f"seed-{seed}.json"),
        partial(_sparsity_sweep, run, mlm_path, options))
    return sparsity_rows(model.name, MLM, seed, "pre-trained", record["rows"])


def after_finetune_sparsity_unit(run: Run, model: ModelSpec, task: TaskSpec, seed: int,
                                 checkpoint: str, eval_options) -> list[dict]:
    """The fine-tuned model pruned at every level (no training afterwards)."""
    record = evaluation_unit(
        run, f"{model.name} {task.name}: fine-tuned, then weights pruned (seed {seed})",
        run.path("sparsity", model.name, task.name, "after-finetune", f"seed-{seed}.json"),
        partial(_sparsity_sweep, run, checkpoint, eval_options))
    return sparsity_rows(model.name, task.name, seed, "pruned after fine-tuning",
                         record["rows"])


def _sparsity_sweep(run: Run, checkpoint: str, options) -> dict:
    from headcount.evaluation import evaluate
    from headcount.jobs.prepared import load_for_task, prepare_for
    from headcount.weight_pruning import sparsity_curve

    spec = run.config.sparsity
    task = options.resolve()
    loaded = load_for_task(checkpoint, task, device=run.config.device, seed=options.seed)
    data = prepare_for(loaded, task, options)
    rows = sparsity_curve(
        loaded.model,
        lambda m: evaluate(m, data.batches(options.batch_size), data.kind, task.metric),
        spec.levels, spec.scope)
    return {"scope": spec.scope, "rows": rows}


def pretrain_pruned_unit(run: Run, model: ModelSpec, task: TaskSpec, seed: int,
                         level: float) -> dict:
    """The pre-trained model with `level` of its encoder weights pruned by magnitude, then
    fine-tuned on the task with the pruned weights held at zero."""
    label = (f"{model.name} {task.name}: weights pruned to {ratio_text(level)} before "
             f"fine-tuning (seed {seed})")
    output = run.path("sparsity", model.name, task.name, "pretrain-pruned",
                      f"level-{ratio_text(level)}", f"seed-{seed}.json")
    return evaluation_unit(run, label, output,
                           partial(_pretrain_pruned, run, model, task, seed, level))


def _pretrain_pruned(run: Run, model: ModelSpec, task: TaskSpec, seed: int,
                     level: float) -> dict:
    from headcount.jobs.prepared import load_for_task
    from headcount.jobs.train import train_and_score
    from headcount.study.plan import _train_options, _training_config
    from headcount.weight_pruning import apply_masks, magnitude_masks, sparsity_report

    spec = run.config.sparsity
    options = _train_options(run, task, seed)
    resolved = options.resolve()
    with warnings.catch_warnings():
        # The pre-trained checkpoint has no task head yet: training one is the point here.
        warnings.filterwarnings("ignore", ".*no trained classification head", UserWarning)
        loaded = load_for_task(model.path, resolved, device=run.config.device, seed=seed)
    masks = magnitude_masks(loaded.model, level, spec.scope)
    apply_masks(loaded.model, masks)
    pruned = sparsity_report(loaded.model)
    scores = train_and_score(loaded, resolved, options, _training_config(run, seed),
                             eval_split=task.eval_split, weight_masks=masks)
    kept = sparsity_report(loaded.model)
    return {"level": level, "scope": spec.scope, "sparsity_before_training": pruned["sparsity"],
            "sparsity_after_training": kept["sparsity"], **scores}


def pretrain_pruned_rows(model: str, task: str, seed: int, tuned: dict,
                         record: dict) -> list[dict]:
    metric = tuned["main_metric"]
    full = tuned["metrics"][metric]
    value = record["metrics"][metric]
    return [{"model": model, "task": task, "seed": seed,
             "setting": "pruned before fine-tuning", "sparsity_requested": record["level"],
             "sparsity_achieved": record["sparsity_after_training"], "metric": metric,
             "value": value, "relative": value / full if full else None,
             "mean_loss": record.get("eval_loss"), "main": True}]
