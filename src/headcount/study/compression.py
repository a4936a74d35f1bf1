"""Compression to a FLOPs budget inside a study run: for every fine-tuned model, the study's
`[compress]` budgets met by heads alone in importance order, by compress's search alone, by
the full method, and by the full method on the batch-summed Fisher of Kwon et al.'s code
(`headcount.jobs.compress.compare_job`). One resumable unit per model, task and seed holds
every budget and method.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from headcount.study.units import TunedModel, UnitContext, evaluation_unit, task_options


def compress_units(ctx: UnitContext, tuned: TunedModel, tables: dict) -> None:
    """The `compress` table's rows of one fine-tuned model (when the config asks)."""
    if ctx.config.compress.budgets:
        tables["compress"] += compress_rows(ctx, tuned.checkpoint)


def compress_rows(ctx: UnitContext, checkpoint: str) -> list[dict]:
    record = evaluation_unit(
        ctx.run, f"{ctx.title}: compressed to FLOPs budgets (seed {ctx.seed})",
        ctx.output("compress"), partial(_compare, ctx, checkpoint))
    return [{**ctx.key, **row} for row in record["rows"]]


def _compare(ctx: UnitContext, checkpoint: str) -> dict:
    from headcount.jobs.compress import CompareRequest, compare_job

    spec, task = ctx.config.compress, ctx.task
    calibration = task_options(task, split=task.train_split, seed=ctx.seed)
    evaluation = replace(calibration, split=task.eval_split, max_length=spec.seq_length,
                         batch_size=spec.batch_size)
    request = CompareRequest(budgets=tuple(spec.budgets), seq_length=spec.seq_length,
                             batch_size=spec.batch_size, max_examples=spec.max_examples)
    rows = compare_job(checkpoint, calibration, evaluation, request,
                       device=ctx.config.device, progress=ctx.run.progress)
    return {"rows": rows}
