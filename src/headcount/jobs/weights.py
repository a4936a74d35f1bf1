"""The `weights-prune` and `sparsity-curve` jobs: weight-magnitude pruning of a checkpoint."""

from __future__ import annotations

from collections.abc import Iterable

from headcount.weight_pruning import (
    RECORD_FILE,
    WEIGHT_PRUNING_KEY,
    apply_masks,
    check_scope,
    check_sparsities,
    check_sparsity,
    magnitude_masks,
    sparsity_curve,
    sparsity_report,
)


def sparsity_curve_job(model: str, options, *, sparsities: Iterable[float] | None = None,
                       scope: str = "global", device=None, progress: bool = False) -> list[dict]:
    """`sparsity_curve` of a checkpoint on `options.task` (a `pipeline.DataOptions`); the
    CSV rows, with model, task and scope.

    Example:
        >>> rows = sparsity_curve_job("bert/", DataOptions("mlm:wiki.txt", split="dev"))
    """
    from headcount.jobs.prepared import prepare_task

    check_scope(scope)
    levels = check_sparsities(sparsities)  # before loading anything
    prepared = prepare_task(model, options, device=device)
    rows = sparsity_curve(prepared.model, prepared.evaluate, levels, scope, progress)
    meta = {"model": model, "task": options.task, "scope": scope}
    return [{**meta, **row} for row in rows]


def weight_prune_job(model: str, out: str, *, sparsity: float, scope: str = "global",
                     device=None) -> dict:
    """Prune a checkpoint's encoder weights by magnitude and save it, with its own head, to
    `out` (atomically; refuses a non-empty directory) with `weight_pruning.json`; the record.

    Example:
        >>> record = weight_prune_job("bert-base-uncased", "bert-30/", sparsity=0.3)
        >>> record["achieved"]["sparsity"]
        0.3
    """
    from headcount.checkpoints import check_empty_target, save_pruned_atomically
    from headcount.io import versions
    from headcount.models import CHECKPOINT_HEAD, load_model

    sparsity = check_sparsity(sparsity)
    check_scope(scope)
    check_empty_target(out)
    loaded = load_model(model, CHECKPOINT_HEAD, device=device or "cpu")
    before = sparsity_report(loaded.model)
    masks = magnitude_masks(loaded.model, sparsity, scope)
    apply_masks(loaded.model, masks)
    report = sparsity_report(loaded.model)
    summary = {"sparsity": sparsity, "scope": scope, "achieved": report["sparsity"],
               "zeros": report["zeros"], "size": report["size"], "source": model}
    setattr(loaded.model.config, WEIGHT_PRUNING_KEY, summary)
    record = {
        "model": model, "out": str(out), "sparsity_requested": sparsity, "scope": scope,
        "zeros_before": before["zeros"], "pruned": sum(int((~m).sum()) for m in masks.values()),
        "achieved": {key: report[key] for key in ("zeros", "size", "sparsity")},
        "matrices": report["matrices"], "versions": versions(),
    }
    save_pruned_atomically(loaded.model, out, loaded.tokenizer, {RECORD_FILE: record})
    return record
