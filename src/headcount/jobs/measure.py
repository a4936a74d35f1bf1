"""The `importance` and `evaluate` jobs: a checkpoint and a task in, a scores or metrics
record out."""

from __future__ import annotations

from headcount.arch import architecture_signature, head_layout
from headcount.estimators import check_estimator, estimate_for_record
from headcount.importance import check_normalization
from headcount.io import versions
from headcount.jobs.prepared import DataOptions, data_record, prepare_task


def importance_job(
    model: str, options: DataOptions, *, normalize_method: str = "l1", device=None,
    progress: bool = False, estimator: str = "gradient", heads_per_pass: int | None = None,
) -> dict:
    """Load, estimate importance (`estimator`, see `headcount.estimators`), normalise; the
    `scores.json` record.

    Example:
        >>> record = importance_job("path/to/ckpt", DataOptions("sst2", data_dir=glue))
        >>> record["scores"][0]  # layer 0, l1-normalised
    """
    check_normalization(normalize_method)  # fail before loading anything
    check_estimator(estimator)
    prepared = prepare_task(model, options, device=device)
    loaded, data = prepared.loaded, prepared.data
    result, extras = estimate_for_record(
        loaded.model, prepared.batches(), data.kind, estimator,
        heads_per_pass=heads_per_pass, progress=progress, total=prepared.num_batches(),
        backoff=prepared.backoff,
    )
    layers, heads = result.raw.shape
    return {
        **data_record(model, options, data, result.num_examples),
        "normalize": normalize_method,
        "shared_across_layers": result.shared,
        "layers": layers,
        "heads": heads,
        "num_layer_applications": head_layout(loaded.model).num_layers,
        "architecture": architecture_signature(loaded.model),
        "mean_loss": result.mean_loss,
        "new_head": loaded.new_head,
        "raw_scores": result.raw.tolist(),
        "scores": result.normalized(normalize_method).tolist(),
        "estimator": estimator,
        **extras,
        "versions": versions(),
    }


def evaluate_job(model: str, options: DataOptions, *, device=None, progress: bool = False) -> dict:
    """Load and score a model on a task split; the metrics record."""
    prepared = prepare_task(model, options, device=device)
    result = prepared.evaluate(progress=progress)
    return {
        **data_record(model, options, prepared.data, result.num_examples),
        "metrics": result.metrics,
        "main_metric": result.main,
        "mean_loss": result.mean_loss,
        "final_batch_size": result.final_batch_size,
        "new_head": prepared.loaded.new_head,
        "versions": versions(),
    }
