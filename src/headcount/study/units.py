"""The run directory of a study and the resumable units that fill it.

`Run` is the directory; `UnitContext` names one model, seed and task of it (what every unit
is about); the option builders say which examples each kind of unit uses; `finetune_unit`,
`importance_unit`, `curve_unit` and `evaluation_unit` are the units that the reference and
companion studies are made of.

Every finished unit (a fine-tuned checkpoint, an importance estimate, each curve point) is
written atomically as soon as it is done, under RUN_DIR/units/, and its checksums are
recorded (`headcount.study.checksums`). Running the same command again skips finished
units and finishes the rest: a run killed at any moment (even with SIGKILL) resumes without
recomputing or duplicating anything. A unit damaged on disk since (files missing,
truncated, unparsable, or not matching their checksums) is reported in one line and
computed again. Stopped by Ctrl-C or SIGTERM, the unit in progress is discarded (a curve
keeps its finished points). The run directory itself (its state, lock and checks) is
`headcount.study.rundir` and `headcount.study.lock`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from headcount.distributed import is_main_process
from headcount.io import read_json_record, write_atomic, write_json
from headcount.study.checksums import Ledger, text_digests
from headcount.study.config import ModelSpec, StudyConfig, TaskSpec
from headcount.study.lock import print_note

if TYPE_CHECKING:
    from headcount.jobs.prepared import DataOptions
    from headcount.training import TrainingConfig

MLM = "mlm"  # the task name of the masked-LM (pre-train) task in paths and tables


class Run:
    """A run directory: where each unit's result lives, its checksums, and the log of the
    work. Only the main process (under torchrun) records checksums and removes damaged
    units; every process decides alike what is left to do."""

    def __init__(self, config: StudyConfig, root: Path, *, progress: bool = True):
        self.config = config
        self.root = root
        self.units = root / "units"
        self.progress = progress
        self.counts = {"done": 0, "skipped": 0, "recomputed": 0}
        self.main = is_main_process()
        self.ledger = Ledger(root, writable=self.main)

    def path(self, *parts: str) -> Path:
        path = self.units.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finished(self, output: Path) -> bool:
        """Whether `output` holds a finished unit whose files match their checksums. A
        damaged one is reported in one line and removed, to be computed again."""
        damage = self.ledger.damage(output)
        if damage is None:
            return output.exists()
        self.counts["recomputed"] += 1
        if self.main:
            print_note(f"unit {self.ledger.key(output)} is damaged: {damage}; "
                       "computing it again")
            if output.is_dir():
                shutil.rmtree(output)
            else:
                output.unlink(missing_ok=True)
        return False

    @contextmanager
    def unit(self, label: str, output: Path):
        """Run the block unless `output` holds a finished unit; log what happened. The
        block must create `output` atomically (the last thing it does); its checksums are
        recorded then."""
        if self.finished(output):
            self.counts["skipped"] += 1
            yield False
            return
        started = time.perf_counter()
        self.log(f"{label} ...")
        try:
            yield True
        except KeyboardInterrupt:
            self.log(f"{label}: stopped; the unit was discarded")
            raise
        if not output.exists():
            raise RuntimeError(f"unit {label} did not produce {output}")
        self.ledger.record(output)
        self.counts["done"] += 1
        self.log(f"{label} done in {time.perf_counter() - started:.1f} s")

    def write_unit(self, output: Path, payload: dict) -> None:
        """Write a JSON unit that is written again as it grows (a curve, point by point):
        its checksums are recorded first, so that a kill between the two leaves the
        previous version, which matches its own."""
        text = json.dumps(payload, indent=2) + "\n"
        self.ledger.record(output, text_digests(output, text), pending=True)
        write_atomic(output, text)

    def log(self, message: str) -> None:
        if self.progress:
            stamp = datetime.now().strftime("%H:%M:%S")
            print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- what a unit is about


@dataclass(frozen=True)
class UnitContext:
    """One model and seed of a run, on one downstream task (None: the masked-LM task)."""

    run: Run
    model: ModelSpec
    seed: int
    task: TaskSpec | None = None

    @property
    def config(self) -> StudyConfig:
        return self.run.config

    @property
    def task_name(self) -> str:
        return MLM if self.task is None else self.task.name

    @property
    def title(self) -> str:
        """How progress messages name the model on the task."""
        return f"{self.model.name} {'masked LM' if self.task is None else self.task.name}"

    @property
    def key(self) -> dict:
        """The columns every row of this model, task and seed starts with."""
        return {"model": self.model.name, "task": self.task_name, "seed": self.seed}

    def on(self, task: TaskSpec) -> UnitContext:
        return replace(self, task=task)

    def output(self, kind: str, *parts: str, name: str | None = None) -> Path:
        """units/KIND/MODEL/TASK/PARTS.../seed-S.json (or NAME)."""
        return self.run.path(kind, self.model.name, self.task_name, *parts,
                             name or f"seed-{self.seed}.json")


def relative(value: float, full: float) -> float | None:
    """`value` as a share of the unpruned (or fully fine-tuned) model's `full`."""
    return value / full if full else None


def ratio_text(ratio: float) -> str:
    return f"{ratio:g}"


# --------------------------------------------------------------------------- which examples


def task_options(task: TaskSpec, **overrides) -> DataOptions:
    from headcount.jobs.prepared import DataOptions

    base = DataOptions(task=task.task, data_dir=task.data_dir, text_column=task.text_column,
                       text_pair_column=task.text_pair_column,
                       label_column=task.label_column, labels=task.labels,
                       problem=task.problem)
    return replace(base, **overrides)


def mlm_options(config: StudyConfig, **overrides) -> DataOptions:
    from headcount.jobs.prepared import DataOptions

    text = config.pretrain.text
    spec = text if text.startswith("mlm:") else f"mlm:{text}"
    return replace(DataOptions(task=spec, max_length=config.pretrain.max_length), **overrides)


def train_options(ctx: UnitContext) -> DataOptions:
    """The fine-tuning examples of the context's task."""
    spec = ctx.config.finetune
    return task_options(ctx.task, split=ctx.task.train_split, fraction=spec.train_fraction,
                        max_examples=spec.train_max_examples, seed=ctx.seed,
                        batch_size=spec.batch_size, max_length=spec.max_length)


def training_config(ctx: UnitContext, freeze_layers: int = 0) -> TrainingConfig:
    from headcount.training import TrainingConfig

    spec = ctx.config.finetune
    return TrainingConfig(epochs=spec.epochs, learning_rate=spec.lr, batch_size=spec.batch_size,
                          warmup=spec.warmup, weight_decay=spec.weight_decay,
                          max_steps=spec.max_steps, freeze_layers=freeze_layers, seed=ctx.seed)


def importance_options(ctx: UnitContext, *caps: int | None) -> DataOptions:
    """The examples importance is estimated on ([importance] for a task, [pretrain] for the
    masked LM), at most the smallest of its max_examples and `caps` (None: no cap)."""
    config = ctx.config
    imp = config.importance
    if ctx.task is None:
        cap = _smallest(config.pretrain.importance_max_examples, *caps)
        return mlm_options(config, split="train", fraction=config.pretrain.importance_fraction,
                           max_examples=cap, seed=ctx.seed, batch_size=imp.batch_size)
    return task_options(ctx.task, split=imp.split, fraction=imp.fraction,
                        max_examples=_smallest(imp.max_examples, *caps), seed=ctx.seed,
                        batch_size=imp.batch_size, max_length=config.finetune.max_length)


def curve_options(ctx: UnitContext) -> DataOptions:
    """The examples pruning curves (and sparsity sweeps) are evaluated on."""
    config = ctx.config
    prune = config.pruning
    if ctx.task is None:
        return mlm_options(config, fraction=config.pretrain.curve_fraction,
                           max_examples=config.pretrain.curve_max_examples, seed=ctx.seed,
                           batch_size=prune.batch_size)
    return task_options(ctx.task, split=prune.split, fraction=prune.fraction,
                        max_examples=prune.max_examples, seed=ctx.seed,
                        batch_size=prune.batch_size, max_length=config.finetune.max_length)


def _smallest(*caps: int | None) -> int | None:
    return min((n for n in caps if n is not None), default=None)


# --------------------------------------------------------------------------- the units


@dataclass(frozen=True)
class TunedModel:
    """The fine-tuned checkpoint of a context, its metrics record and its importance on the
    task: what the units after fine-tuning start from."""

    checkpoint: str
    record: dict
    scores: dict

    @property
    def main_value(self) -> float:
        return self.record["metrics"][self.record["main_metric"]]


def mlm_checkpoint(run: Run, model: ModelSpec) -> str:
    """The checkpoint that carries the masked-LM head of `model`: its own, a given one, or
    one fitted on the frozen encoder (a unit of the run)."""
    if not model.fit_mlm_head:
        return model.mlm_path or model.path
    output = run.path("mlm-head", model.name)
    with run.unit(f"fit MLM head of {model.name}", output) as todo:
        if todo:
            from headcount.mlm_head import HeadFit, fit_mlm_head, save_fitted_head

            config = run.config
            fit = HeadFit(steps=config.pretrain.fit_steps, max_length=config.pretrain.max_length,
                          seed=config.seeds[0])
            fitted, tokenizer, record = fit_mlm_head(
                model.path, config.pretrain.text.removeprefix("mlm:"), fit,
                device=config.device, progress=run.progress)
            save_fitted_head(fitted, tokenizer, record, output)
    return str(output)


def finetune_unit(ctx: UnitContext) -> Path:
    """The context's model fine-tuned on its task: a checkpoint folder with metrics.json."""
    from headcount.jobs.train import finetune_job

    run = ctx.run
    output = run.path("finetune", ctx.model.name, ctx.task_name, f"seed-{ctx.seed}")
    with run.unit(f"fine-tune {ctx.model.name} on {ctx.task_name} (seed {ctx.seed})",
                  output) as todo:
        if todo:
            finetune_job(ctx.model.path, train_options(ctx), training_config(ctx), str(output),
                         eval_split=ctx.task.eval_split, device=run.config.device,
                         progress=run.progress)
    return output


def importance_units(config: StudyConfig) -> str:
    """What the study's gradient importance scores: heads, and neurons too when the curves
    prune them (the other analyses read the heads' scores)."""
    return "heads" if config.pruning.units == "heads" else "both"


def importance_unit(run: Run, label: str, checkpoint: str, options: DataOptions, output: Path,
                    estimator: str = "gradient") -> dict:
    """Raw importance by `estimator`, with the unit's wall time including loading (what
    choosing the estimator costs); the gradient scores neurons too where the curves prune
    them (`importance_units`)."""
    from headcount.jobs.measure import importance_job

    units = importance_units(run.config) if estimator == "gradient" else "heads"
    with run.unit(f"importance: {label}", output) as todo:
        if todo:
            started = time.perf_counter()
            record = importance_job(checkpoint, options, normalize_method="none",
                                    device=run.config.device, progress=run.progress,
                                    estimator=estimator, units=units)
            write_json(output, {**record, "seconds": time.perf_counter() - started})
    return read_json_record(output, "importance record")


def curve_unit(ctx: UnitContext, label: str, checkpoint: str, scores: dict, normalize: str,
               output: Path, meta: dict, units: str | None = None) -> list[dict]:
    """A pruning curve on the context's curve examples whose every point is saved as soon as
    it is evaluated; it prunes `units` (default: the config's `[pruning] units`)."""
    from headcount.jobs.prepared import prepare_task
    from headcount.pruning import (
        CurveSettings,
        Ranking,
        point_from_record,
        point_record,
        pruning_curve,
        step_ratios,
    )
    from headcount.records import curve_rows
    from headcount.study.shared import shared_evaluations

    run = ctx.run
    spec = run.config.pruning
    units = units or spec.units
    ratios = step_ratios(spec.step)
    saved = read_json_record(output, "curve") if run.finished(output) else {"points": []}
    completed = [point_from_record(p) for p in saved["points"]]
    if len(completed) >= len(ratios):
        run.counts["skipped"] += 1
        return curve_rows(completed, meta)
    run.log(f"curve: {label} ({len(completed)}/{len(ratios)} points done) ...")
    prepared = prepare_task(checkpoint, curve_options(ctx), device=run.config.device)
    records = [point_record(p) for p in completed]

    def save(point):
        records.append(point_record(point))
        run.write_unit(output, {"meta": meta, "points": records})

    try:
        pruning_curve(
            prepared.model, prepared.evaluate,
            Ranking(scores=_unit_scores(scores, units), normalize_method=normalize),
            CurveSettings(ratios=ratios, keep_one_per_layer=spec.keep_one_per_layer,
                          units=units),
            completed=completed, on_point=save,
            evaluations=shared_evaluations(checkpoint, curve_options(ctx), run.config.device),
        )
    except KeyboardInterrupt:
        run.log(f"curve: {label}: stopped; its {len(records)} finished points are kept")
        raise
    run.counts["done"] += 1
    return curve_rows([point_from_record(p) for p in json.loads(output.read_text())["points"]],
                      meta)


def _unit_scores(record: dict, units: str) -> dict[str, torch.Tensor]:
    """The raw scores of an importance record by kind, for a curve of `units`."""
    from headcount.records import SCORE_FIELDS

    kinds = ("heads", "neurons") if units == "both" else (units,)
    return {kind: torch.tensor(record[SCORE_FIELDS[kind][0]]) for kind in kinds}


def evaluation_unit(run: Run, label: str, output: Path, compute) -> dict:
    """The record `compute()` returns, computed once and saved at `output`."""
    with run.unit(label, output) as todo:
        if todo:
            write_json(output, compute())
    return read_json_record(output, "result")
