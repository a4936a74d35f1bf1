"""`headcount study CONFIG.toml`: the whole study of the reference paper, resumable.

For every model, task and seed: fine-tune; importance on the downstream task and on masked
LM; pruning curves for each normalisation (downstream and masked LM); then recall,
attention/feature drift, importance-drift correlation, the freezing experiment and pruned
fine-tuning before/after; finally tidy tables, figures and a report.

Every finished unit (a fine-tuned checkpoint, an importance estimate, each curve point) is
written atomically as soon as it is done, under RUN_DIR/units/. Running the same command
again skips finished units and finishes the rest: a run killed at any moment (even with
SIGKILL) resumes without recomputing or duplicating anything. A run directory made with a
different configuration is refused unless `--force`, which starts it afresh.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from headcount.errors import HeadcountError
from headcount.io import read_json_record, versions, write_atomic, write_json
from headcount.study.config import ModelSpec, StudyConfig, TaskSpec

STATE_FILE = "study.json"


class Run:
    """A run directory: where each unit's result lives, and the log of the work."""

    def __init__(self, config: StudyConfig, root: Path, *, progress: bool = True):
        self.config = config
        self.root = root
        self.units = root / "units"
        self.progress = progress
        self.counts = {"done": 0, "skipped": 0}

    def path(self, *parts: str) -> Path:
        path = self.units.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def unit(self, label: str, output: Path):
        """Run the block unless `output` exists; log what happened. The block must create
        `output` atomically (the last thing it does)."""
        if output.exists():
            self.counts["skipped"] += 1
            yield False
            return
        started = time.perf_counter()
        self.log(f"{label} ...")
        yield True
        if not output.exists():
            raise RuntimeError(f"unit {label} did not produce {output}")
        self.counts["done"] += 1
        self.log(f"{label} done in {time.perf_counter() - started:.1f} s")

    def log(self, message: str) -> None:
        if self.progress:
            stamp = datetime.now().strftime("%H:%M:%S")
            print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def prepare_run_dir(config: StudyConfig, root: Path, *, force: bool) -> None:
    """Create the run directory, or check that it belongs to this configuration.

    `force` starts afresh only in a directory that is a headcount run directory (it has
    study.json): nothing else is ever deleted.
    """
    state_path = root / STATE_FILE
    if root.exists() and any(root.iterdir()):
        if not state_path.exists():
            raise HeadcountError(f"--out {root} exists, is not empty and is not a headcount "
                                 "run directory; choose another --out")
        state = read_json_record(state_path, "study state")
        if state.get("config_digest") != config.digest:
            if not force:
                raise HeadcountError(
                    f"{root} was made by a different configuration (digest "
                    f"{state.get('config_digest')}, this one {config.digest}); use another "
                    "--out, or --force to start it afresh"
                )
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_partial_writes(root / "units")
    if not state_path.exists():
        write_json(state_path, {"name": config.name, "config_digest": config.digest,
                                "created": datetime.now(UTC).isoformat()})
    write_atomic(root / "config.toml", config.text)


def _remove_partial_writes(units: Path) -> None:
    """Atomic writes stage into hidden files and folders ('.name.xyz') beside their target;
    a killed run can leave some behind. Nothing else in units/ is hidden."""
    if not units.exists():
        return
    for path in sorted(units.rglob(".*"), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def environment(device: torch.device) -> dict:
    return {
        "versions": versions(),
        "git": versions().get("headcount_git"),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                 if device.type == "cuda" else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- the units


def _options(task: TaskSpec, **overrides):
    from headcount.jobs.prepared import DataOptions

    base = DataOptions(task=task.task, data_dir=task.data_dir, text_column=task.text_column,
                       text_pair_column=task.text_pair_column,
                       label_column=task.label_column)
    return replace(base, **overrides)


def _mlm_options(config: StudyConfig, **overrides):
    from headcount.jobs.prepared import DataOptions

    text = config.pretrain.text
    spec = text if text.startswith("mlm:") else f"mlm:{text}"
    return replace(DataOptions(task=spec, max_length=config.pretrain.max_length), **overrides)


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


def finetune_unit(run: Run, model: ModelSpec, task: TaskSpec, seed: int) -> Path:
    from headcount.jobs.train import finetune_job
    from headcount.training import TrainingConfig

    spec = run.config.finetune
    output = run.path("finetune", model.name, task.name, f"seed-{seed}")
    with run.unit(f"fine-tune {model.name} on {task.name} (seed {seed})", output) as todo:
        if todo:
            config = TrainingConfig(epochs=spec.epochs, learning_rate=spec.lr,
                                    batch_size=spec.batch_size, warmup=spec.warmup,
                                    weight_decay=spec.weight_decay, max_steps=spec.max_steps,
                                    seed=seed)
            options = _options(task, split=task.train_split, fraction=spec.train_fraction,
                               max_examples=spec.train_max_examples, seed=seed,
                               batch_size=spec.batch_size, max_length=spec.max_length)
            finetune_job(model.path, options, config, str(output), eval_split=task.eval_split,
                         device=run.config.device, progress=run.progress)
    return output


def importance_unit(run: Run, label: str, checkpoint: str, options, output: Path,
                    estimator: str = "gradient") -> dict:
    """Raw importance by `estimator`, with the unit's wall time including loading (what
    choosing the estimator costs)."""
    from headcount.jobs.measure import importance_job

    with run.unit(f"importance: {label}", output) as todo:
        if todo:
            started = time.perf_counter()
            record = importance_job(checkpoint, options, normalize_method="none",
                                    device=run.config.device, progress=run.progress,
                                    estimator=estimator)
            write_json(output, {**record, "seconds": time.perf_counter() - started})
    return read_json_record(output, "importance record")


def curve_unit(run: Run, label: str, checkpoint: str, options, scores: dict, normalize: str,
               output: Path, meta: dict) -> list[dict]:
    """A pruning curve whose every point is saved as soon as it is evaluated."""
    from headcount.evaluation import evaluate
    from headcount.jobs.prepared import load_for_task, prepare_for
    from headcount.jobs.prune import curve_rows
    from headcount.pruning import (
        CurveSettings,
        Ranking,
        point_from_record,
        point_record,
        pruning_curve,
        step_ratios,
    )

    spec = run.config.pruning
    ratios = step_ratios(spec.step)
    saved = json.loads(output.read_text()) if output.exists() else {"points": []}
    completed = [point_from_record(p) for p in saved["points"]]
    if len(completed) < len(ratios):
        run.log(f"curve: {label} ({len(completed)}/{len(ratios)} points done) ...")
        task = options.resolve()
        loaded = load_for_task(checkpoint, task, device=run.config.device, seed=options.seed)
        data = prepare_for(loaded, task, options)
        records = [point_record(p) for p in completed]

        def save(point):
            records.append(point_record(point))
            write_json(output, {"meta": meta, "points": records})

        pruning_curve(
            loaded.model,
            lambda m: evaluate(m, data.batches(options.batch_size), data.kind, task.metric),
            Ranking(scores=torch.tensor(scores["raw_scores"]), normalize_method=normalize),
            CurveSettings(ratios=ratios, keep_one_per_layer=spec.keep_one_per_layer),
            completed=completed, on_point=save,
        )
        completed = [point_from_record(p)
                     for p in json.loads(output.read_text())["points"]]
        run.counts["done"] += 1
    else:
        run.counts["skipped"] += 1
    return curve_rows(completed, meta)


def evaluation_unit(run: Run, label: str, output: Path, compute) -> dict:
    with run.unit(label, output) as todo:
        if todo:
            write_json(output, compute())
    return read_json_record(output, "result")


# --------------------------------------------------------------------------- the study


