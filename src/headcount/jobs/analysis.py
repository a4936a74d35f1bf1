"""The `compare`, `correlate`, `recall` and `compensation` jobs: attention/feature drift
between two checkpoints, importance-drift correlation, recall of important heads from pruning
curves, and how importance moves after pruning."""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from headcount.compensation import compensation_record
from headcount.correlation import correlation_record
from headcount.drift import (
    AVERAGING,
    attention_drift,
    check_same_shape,
    check_same_vocabulary,
    none_if_nan,
)
from headcount.errors import HeadcountError
from headcount.io import read_scores_record, versions
from headcount.layouts import architecture_signature


def _unlabelled(task):
    """The task with every label replaced by class 0: drift does not use labels, and this
    way a checkpoint whose head does not fit the task (a pre-trained model's default
    two-label config on MNLI, a classifier on STS-B) can still tokenise its inputs."""
    from headcount.tasks.registry import CLASSIFICATION, MLM

    if task.kind == MLM:
        return task
    load = task.load

    def load_inputs(split):
        return [replace(example, label=0) for example in load(split)]

    return replace(task, kind=CLASSIFICATION, label_names=(), load=load_inputs)


def drift_job(
    pretrained: str, finetuned: str, options, *, device=None, progress: bool = False,
) -> dict:
    """Load both checkpoints (eager attention, their own heads), tokenise the task's inputs
    with the first model's tokenizer, measure the drift; the `drift.json` record.

    `options` is a `pipeline.DataOptions`; labels are not used.

    Example:
        >>> record = drift_job("roberta-base", "ckpt/sst2", DataOptions("sst2", split="dev"))
        >>> record["js_layer_mean"]
    """
    from headcount.data import prepare_data
    from headcount.models import CHECKPOINT_HEAD, load_model, resolve_device

    task = options.resolve()
    target = resolve_device(device)
    names = (pretrained, finetuned)
    first = load_model(pretrained, CHECKPOINT_HEAD, device=target, attn_implementation="eager")
    second = load_model(finetuned, CHECKPOINT_HEAD, device=target, attn_implementation="eager")
    layout = check_same_shape(first.model, second.model, names)
    check_same_vocabulary(first.tokenizer, second.tokenizer, names)
    data = prepare_data(
        _unlabelled(task), first.tokenizer, first.model.config, split=options.split,
        max_length=options.max_length, fraction=options.fraction,
        max_examples=options.max_examples, seed=options.seed,
    )
    drift = attention_drift(
        first.model, second.model, data.batches(options.batch_size), names=names,
        progress=progress, total=data.num_batches(options.batch_size),
    )
    return {
        "pretrained": pretrained,
        "finetuned": finetuned,
        "task": options.task,
        "split": options.split,
        "num_examples": drift.num_examples,
        "layers": layout.num_layers,
        "heads": layout.num_heads,
        "shared_across_layers": layout.shared_layers,
        "architecture": architecture_signature(first.model),
        "js": [[none_if_nan(value) for value in row] for row in drift.js],
        "js_layer_mean": drift.js_layer_mean(),
        "js_layer_max": drift.js_layer_max(),
        "l2": [float(value) for value in drift.l2],
        "l2_embeddings": drift.l2_embeddings,
        "final_batch_size": drift.final_batch_size,
        "averaging": AVERAGING,
        "options": {k: v for k, v in asdict(options).items() if k not in ("task", "split")},
        "versions": versions(),
    }


def correlate_job(scores_paths: list[str], drift_path: str, *, raw: bool = False) -> dict:
    """Every scores file against one drift file; the `corr.json` record.

    Example:
        >>> record = correlate_job(["mlm_scores.json", "sst2_scores.json"], "drift.json")
        >>> [(r["scores_task"], r["pearson_r"]) for r in record["records"]]
    """
    from headcount.records import read_drift

    if not scores_paths:
        raise HeadcountError("give at least one --scores file")
    drift = read_drift(drift_path)
    records = [
        correlation_record(read_scores_record(path), drift, raw=raw,
                           names=(str(path), str(drift_path)))
        for path in scores_paths
    ]
    return {
        "drift": str(drift_path),
        "drift_task": drift.get("task"),
        "pretrained": drift.get("pretrained"),
        "finetuned": drift.get("finetuned"),
        "records": records,
        "versions": versions(),
    }


def recall_job(pretrain_paths: list[str], downstream_paths: list[str], *,
               threshold: float = 0.9, step: float = 0.05) -> list[dict]:
    """Recall over x from pruning-curve CSVs (`headcount curve`), pre-train and downstream;
    the `recall.csv` rows: x, recall_mean, recall_std (population std over seeds), n,
    per-seed values.

    Example:
        >>> rows = recall_job(["mlm_curve.csv"], ["sst2_seed0.csv", "sst2_seed1.csv"])
        >>> rows[-1]["recall_mean"]  # x = 1
    """
    from headcount.recall import curve_steps, recall_rows

    pretrain = [c for path in pretrain_paths for c in curve_steps(path)]
    downstream = [c for path in downstream_paths for c in curve_steps(path)]
    return recall_rows(pretrain, downstream, threshold=threshold, step=step)


def compensation_job(before_path: str, after_path: str, model: str) -> dict:
    """Compensation from two `scores.json` of the same pruned checkpoint `model`, estimated
    before and after fine-tuning it (raw scores are compared; the heads it still has are
    read from its config)."""
    from headcount.errors import HeadcountError
    from headcount.io import read_scores_record, versions
    from headcount.layouts import KEPT_HEADS_KEY
    from headcount.models import load_config

    records = [read_scores_record(path, required=("raw_scores",))
               for path in (before_path, after_path)]
    before, after = (torch.tensor(record["raw_scores"], dtype=torch.float64)
                     for record in records)
    if before.shape != after.shape:
        raise HeadcountError(f"{before_path} and {after_path} have scores of shapes "
                             f"{list(before.shape)} and {list(after.shape)}")
    estimators = {record.get("estimator", "gradient") for record in records}
    if len(estimators) > 1:
        raise HeadcountError(f"{before_path} and {after_path} come from different estimators "
                             f"({', '.join(sorted(estimators))}); compare like with like")
    config = load_config(model)
    kept = getattr(config, KEPT_HEADS_KEY, None)
    if kept is None:
        kept = [list(range(before.shape[1]))] * before.shape[0]
    if len(kept) != before.shape[0]:
        raise HeadcountError(f"{model} has {len(kept)} layers of heads; the scores have "
                             f"{before.shape[0]}")
    return {"model": model, "before": before_path, "after": after_path,
            "estimator": estimators.pop(), **compensation_record(before, after, kept),
            "versions": versions()}
