"""The `importance` and `evaluate` jobs: a checkpoint and a task in, a scores or metrics
record out."""

from __future__ import annotations

from headcount.errors import ConfigError
from headcount.estimators import check_estimator, estimate_for_record
from headcount.importance import check_normalization, unit_importance, unit_kinds
from headcount.io import versions
from headcount.jobs.prepared import DataOptions, data_record, prepare_task
from headcount.layouts import architecture_signature, head_layout
from headcount.records import SCORE_FIELDS


def _unit_fields(results: dict, normalize_method: str) -> dict:
    """The scores record's fields of each kind of unit estimated."""
    fields = {}
    for unit, result in results.items():
        raw_field, scores_field = SCORE_FIELDS[unit]
        fields[raw_field] = result.raw.tolist()
        fields[scores_field] = result.normalized(normalize_method).tolist()
        fields["layers"], fields[unit] = result.raw.shape
    return fields


def importance_job(
    model: str, options: DataOptions, *, normalize_method: str = "l1", device=None,
    progress: bool = False, estimator: str = "gradient", heads_per_pass: int | None = None,
    units: str = "heads",
) -> dict:
    """Load, estimate importance (`estimator`, see `headcount.estimators`), normalise; the
    `scores.json` record. `units` "neurons" or "both" estimates feed-forward neurons too
    (heads and neurons from the same backward pass; the gradient estimator only).

    Example:
        >>> record = importance_job("path/to/ckpt", DataOptions("sst2", data_dir=glue))
        >>> record["scores"][0]  # layer 0, l1-normalised
    """
    check_normalization(normalize_method)  # fail before loading anything
    check_estimator(estimator)
    kinds = unit_kinds(units)
    if kinds != ("heads",) and estimator != "gradient":
        raise ConfigError(f"--units {units}: neurons are scored by the gradient estimator "
                          f"only, not {estimator}")
    prepared = prepare_task(model, options, device=device)
    loaded, data = prepared.loaded, prepared.data
    if kinds == ("heads",):
        result, extras = estimate_for_record(
            loaded.model, prepared.batches(), data.kind, estimator,
            heads_per_pass=heads_per_pass, progress=progress, total=prepared.num_batches(),
            backoff=prepared.backoff,
        )
        results = {"heads": result}
    else:
        results = unit_importance(loaded.model, prepared.batches(), data.kind, units=kinds,
                                  progress=progress, total=prepared.num_batches(),
                                  backoff=prepared.backoff)
        extras = {"final_batch_size": prepared.backoff.final_size}
        result = next(iter(results.values()))
    return {
        **data_record(model, options, data, result.num_examples),
        "units": units,
        "normalize": normalize_method,
        "shared_across_layers": result.shared,
        **_unit_fields(results, normalize_method),
        "num_layer_applications": head_layout(loaded.model).num_layers,
        "architecture": architecture_signature(loaded.model),
        "mean_loss": result.mean_loss,
        "new_head": loaded.new_head,
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
