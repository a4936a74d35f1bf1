"""`headcount study CONFIG --plan`: what a study would run, without running it.

Every unit (model x task x seed x analysis) in the order the runner takes them
(`plan.run_all`), whether the run directory already holds its result, and a rough time for
the rest. Nothing is written. The units' result paths follow `UnitContext.output`
(units/KIND/MODEL/TASK/.../seed-S.json); a test runs a small study and checks that its plan
then finds every unit done.

The time of each unit is rough (`headcount.study.costs`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from headcount.errors import ConfigError, HeadcountError
from headcount.study.config import ModelSpec, StudyConfig, TaskSpec, load_config, run_dir
from headcount.study.costs import (
    Split,
    device_speed,
    duration_text,
    split_of,
    subset,
    text_blocks,
    times,
    unit_seconds,
)
from headcount.study.units import MLM, ratio_text, task_options


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of the study and what it costs: `passes` forward passes over examples of
    `tokens` tokens each (None: the size cannot be known here)."""

    model: str
    task: str
    seed: int | None
    analysis: str
    output: Path
    passes: float | None
    tokens: float | None
    points: int = 0  # a pruning curve's points (0: not a curve)

    def done_share(self) -> float:
        """1 when the run directory holds the result; a curve's share of points saved."""
        if not self.points:
            return 1.0 if self.output.exists() else 0.0
        if not self.output.exists():
            return 0.0
        return min(1.0, len(json.loads(self.output.read_text())["points"]) / self.points)


@dataclass
class Plan:
    config: StudyConfig
    root: Path
    units: list[PlannedUnit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    models: dict[str, object] = field(default_factory=dict)  # name -> transformers config
    splits: dict[tuple, Split | None] = field(default_factory=dict)


def plan_study(config: StudyConfig, root: str | Path) -> Plan:
    """Every unit of `config` for the run directory `root`, with the problems found in its
    models and data (a local path that does not load) and notes on what could not be sized
    here (hub names offline)."""
    plan = Plan(config, Path(root))
    for model in config.models:
        _model_units(plan, model)
    return plan


# --------------------------------------------------------------------------- sizes


def _model_config(plan: Plan, model: ModelSpec):
    """The model's transformers config, or None (noted) when it cannot be read here."""
    if model.name not in plan.models:
        from headcount.models import load_config as read_model_config
        from headcount.models import local_source

        try:
            plan.models[model.name] = read_model_config(model.path)
        except HeadcountError as error:
            plan.models[model.name] = None
            # The config made local paths absolute; anything else is a hub name.
            if Path(local_source(model.path)).expanduser().is_absolute():
                plan.problems.append(f"models {model.name}: {error}")
            else:
                plan.notes.append(f"{model.name}: {model.path} is a hub name not available "
                                  "offline here; its units are listed but not timed, and "
                                  "counted as a model whose layers are distinct")
    return plan.models[model.name]


def _task_split(plan: Plan, task: TaskSpec, split: str, max_length: int) -> Split | None:
    """The size of a task's split, or None (noted, or a problem for local data)."""
    key = (task.name, split, max_length)
    if key not in plan.splits:
        try:
            examples = task_options(task).resolve().load(split)
        except HeadcountError as error:
            first = not any(other[0] == task.name and found is None
                            for other, found in plan.splits.items())
            plan.splits[key] = None
            if first and (task.data_dir is not None or ":" in task.task):
                plan.problems.append(f"tasks {task.name}: {error}")
            elif first:
                plan.notes.append(f"{task.name}: GLUE from the hub, which is not reachable "
                                  "here; its units are listed but not timed")
            return None
        plan.splits[key] = split_of(examples, max_length)
    return plan.splits[key]


# --------------------------------------------------------------------------- the units


@dataclass(frozen=True)
class _Where:
    """A model, task and seed of the plan: where its units go and what they cost."""

    plan: Plan
    model: ModelSpec
    task: str
    seed: int | None

    def add(self, analysis: str, kind: str, *parts: str, passes: float | None,
            tokens: float | None, name: str | None = None, points: int = 0) -> None:
        """A unit whose result is units/KIND/MODEL/TASK/PARTS.../NAME (`UnitContext.output`;
        NAME defaults to seed-S.json)."""
        output = self.plan.root.joinpath("units", kind, self.model.name, self.task, *parts,
                                         name or f"seed-{self.seed}.json")
        self.plan.units.append(PlannedUnit(self.model.name, self.task, self.seed, analysis,
                                           output, passes, tokens, points))


def _model_units(plan: Plan, model: ModelSpec) -> None:
    config = plan.config
    model_config = _model_config(plan, model)
    shared = bool(model_config is not None and _shares_layers(model_config))
    layers = getattr(model_config, "num_hidden_layers", None)
    too_many = [k for k in config.analyses.freezing if layers is not None and k > layers]
    if too_many and not shared:
        plan.problems.append(f"analyses.freezing: {too_many[0]} layers, but {model.name} has "
                             f"{layers}")
    if model.fit_mlm_head:
        from headcount.mlm_head import HeadFit

        fit = HeadFit()
        # The frozen encoder runs forward only (the head's backward pass is small), then
        # scores the held-out blocks before and after.
        plan.units.append(PlannedUnit(
            model.name, MLM, None, f"fit masked-LM head ({config.pretrain.fit_steps} steps)",
            plan.root / "units" / "mlm-head" / model.name,
            config.pretrain.fit_steps * fit.batch_size + 2 * fit.max_held_out,
            float(config.pretrain.max_length)))
    for seed in config.seeds:
        _seed_units(plan, model, seed, shared)


def _seed_units(plan: Plan, model: ModelSpec, seed: int, shared: bool) -> None:
    config = plan.config
    text = text_blocks(config)
    mlm = _Where(plan, model, MLM, seed)
    pretrain = config.pretrain
    importance = subset(text.count, pretrain.importance_fraction,
                         pretrain.importance_max_examples)
    curve = subset(text.count, pretrain.curve_fraction, pretrain.curve_max_examples)
    mlm.add("importance (gradient)", "importance", passes=3 * importance, tokens=text.tokens)
    _curves(mlm, curve, text.tokens)
    for task in config.tasks:
        _task_units(plan, _Where(plan, model, task.name, seed), task, shared)
    estimators = config.estimators
    if estimators.names:
        _estimators(mlm, subset(importance, None, estimators.max_examples), text.tokens)
    if config.sparsity.levels:
        mlm.add("weights pruned at each sparsity", "sparsity",
                passes=len(config.sparsity.levels) * curve, tokens=text.tokens)


def _curves(where: _Where, examples: int | None, tokens: float | None) -> None:
    points = len(_ratios(where.plan.config))
    for method in where.plan.config.importance.normalizations:
        where.add(f"pruning curve, {method}", "curves", method, passes=times(points, examples),
                  tokens=tokens, points=points)


def _ratios(config: StudyConfig) -> list[float]:
    from headcount.pruning import step_ratios

    return step_ratios(config.pruning.step)


def _task_units(plan: Plan, where: _Where, task: TaskSpec, shared: bool) -> None:
    """The units of one task (`reference.task_units`, then `companion.task_units`)."""
    config = plan.config
    tune = config.finetune
    train = _task_split(plan, task, task.train_split, tune.max_length)
    dev = _task_split(plan, task, task.eval_split, tune.max_length)
    count = train and subset(train.count, tune.train_fraction, tune.train_max_examples)
    steps = count and math.ceil(count / tune.batch_size) * tune.epochs
    if steps and tune.max_steps:
        steps = min(steps, tune.max_steps)
    # Training: forward and backward over every step's batch, then the evaluation split.
    finetune = times(steps, tune.batch_size, 3)
    finetune = finetune and finetune + (dev.count if dev else 0)
    tokens = train and train.tokens
    where.add("fine-tune", "finetune", passes=finetune, tokens=tokens, name=f"seed-{where.seed}")
    imp = config.importance
    imp_split = _task_split(plan, task, imp.split, tune.max_length)
    imp_count = imp_split and subset(imp_split.count, imp.fraction, imp.max_examples)
    where.add("importance (gradient)", "importance", passes=times(3, imp_count), tokens=tokens)
    prune = config.pruning
    curve_split = _task_split(plan, task, prune.split, tune.max_length)
    curve = curve_split and subset(curve_split.count, prune.fraction, prune.max_examples)
    _curves(where, curve, tokens)
    analyses = config.analyses
    if analyses.drift:
        drift = dev and subset(dev.count, None, analyses.drift_max_examples)
        where.add("attention and feature drift", "drift", passes=times(2, drift),
                  tokens=tokens)
    for layers in () if shared else analyses.freezing:
        where.add(f"fine-tune, {layers} layers frozen", "freezing", f"k{layers}",
                  passes=finetune, tokens=tokens)
    pruned = times(2, finetune)  # scored before, fine-tuned, importance before and after
    if analyses.pruned_finetune:
        _pruned(where, "importance", analyses.pruned_finetune, pruned, tokens)
    _companion_units(where, shared, finetune, curve, imp_count, tokens)
    _compress_unit(where, train, dev)


def _compress_unit(where: _Where, train: Split | None, dev: Split | None) -> None:
    """`compression.compress_units`: one unit holding every budget and method."""
    spec = where.plan.config.compress
    if not spec.budgets:
        return
    examples = train and subset(train.count, None, spec.max_examples)
    # Both Fishers (a forward and backward each), tuning (about two forwards per budget and
    # tuned method), and the evaluation split once per budget and method plus the unpruned.
    budgets = len(spec.budgets)
    passes = times(examples, 3 * 2 + 2 * 2 * budgets)
    passes = passes and passes + (dev.count if dev else 0) * (4 * budgets + 1)
    where.add(f"compressed to {budgets} FLOPs budget(s), 4 methods", "compress",
              passes=passes, tokens=float(spec.seq_length))


def _pruned(where: _Where, order: str, ratio: float, passes, tokens) -> None:
    output = where.plan.root.joinpath("units", "pruned", where.model.name, where.task, order,
                                      f"ratio-{ratio_text(ratio)}", f"seed-{where.seed}.json")
    if any(unit.output == output for unit in where.plan.units):
        return  # importance order at the reference study's ratio: one unit for both
    where.add(f"{ratio_text(ratio)} of heads pruned in {order} order, fine-tuned again",
              "pruned", order, f"ratio-{ratio_text(ratio)}", passes=passes, tokens=tokens)


def _companion_units(where: _Where, shared: bool, finetune, curve, imp_count,
                     tokens) -> None:
    """`companion.task_units`: orders, fine-tuning after pruning, estimators, sparsity."""
    from headcount.choices import LAYER_ORDERS

    config = where.plan.config
    orders = config.orders
    points = len(_ratios(config))
    for order in orders.names:
        if order in LAYER_ORDERS and shared:
            continue
        for draw in range(orders.draws if order == "random" else 1):
            where.add(f"pruning curve, {order} order, draw {draw}", "curves-orders", order,
                      name=f"seed-{where.seed}-draw-{draw}.json",
                      passes=times(points, curve), tokens=tokens, points=points)
    for order in orders.finetune:
        if order not in ("importance", "random") and shared:
            continue
        for ratio in orders.finetune_ratios:
            _pruned(where, order, ratio, times(2, finetune), tokens)
    if config.estimators.names:
        _estimators(where, subset(imp_count, None, config.estimators.max_examples)
                    if imp_count else None, tokens, downstream=True, curve=curve)
    sparsity = config.sparsity
    if sparsity.levels:
        for level in sparsity.levels_to_finetune:
            if level:
                where.add(f"weights pruned to {ratio_text(level)}, then fine-tuned",
                          "sparsity", "pretrain-pruned", f"level-{ratio_text(level)}",
                          passes=finetune, tokens=tokens)
        if sparsity.after_finetune:
            where.add("fine-tuned, then weights pruned at each sparsity", "sparsity",
                      "after-finetune", passes=times(len(sparsity.levels), curve),
                      tokens=tokens)


def _estimators(where: _Where, examples: int | None, tokens, *, downstream: bool = False,
                curve: int | None = None) -> None:
    """`companion.estimator_units`: gradient and every configured estimator on the same
    examples, and on a downstream task a pruning curve ordered by each (on `curve`
    examples, those of the study's curves)."""
    config = where.plan.config
    model_config = where.plan.models.get(where.model.name)
    heads = (model_config.num_hidden_layers * model_config.num_attention_heads
             if model_config is not None else None)
    # Ablation runs the layers above each switched-off head again: half a pass per head.
    cost = {"gradient": 3, "ablation": heads and heads / 2, "entropy": 1, "confidence": 1,
            "magnitude": 0}
    for estimator in ("gradient", *config.estimators.names):
        where.add(f"estimators: {estimator}", "importance-estimators", estimator,
                  passes=times(cost[estimator], examples), tokens=tokens)
    if downstream and config.estimators.curves:
        points = len(_ratios(config))
        for estimator in config.estimators.names:
            where.add(f"pruning curve, ordered by {estimator}", "curves-estimators",
                      estimator, passes=times(points, curve), tokens=tokens,
                      points=points)


def _shares_layers(model_config) -> bool:
    from headcount.arch import family_of

    return family_of(model_config).shared_layers


# --------------------------------------------------------------------------- the plan as text


def run_dir_note(plan: Plan) -> tuple[bool, str]:
    """(whether the run directory's results count as done for this config, what to say)."""
    state = plan.root / "study.json"
    if not state.exists():
        return False, f"run directory {plan.root}: " + (
            "not a headcount run directory" if plan.root.exists() and any(plan.root.iterdir())
            else "not started")
    digest = json.loads(state.read_text()).get("config_digest")
    if digest != plan.config.digest:
        return False, (f"run directory {plan.root}: made by another configuration; `study` "
                       "refuses it unless --force, which starts afresh")
    return True, f"run directory {plan.root}"


def plan_text(config: StudyConfig, root: str | Path) -> str:
    """What `headcount study CONFIG --plan` prints: every unit with its state and rough
    time, then the totals. ConfigError when a local model or data set does not load."""
    plan = plan_study(config, root)
    if plan.problems:
        raise ConfigError(f"{len(plan.problems)} problem(s) in the study's models and data:\n  "
                          + "\n  ".join(plan.problems))
    counts, where = run_dir_note(plan)
    try:
        speed, device = device_speed(config.device)
    except HeadcountError as error:  # a GPU config planned on a machine without one
        speed, device = device_speed("cpu")
        plan.notes.append(f"{error}: timed on the cpu")
    lines = [f"{'done':<5} {'model':<12} {'task':<10} {'seed':>4}  {'analysis':<58} time"]
    left, unknown, done, partial = 0.0, 0, 0, 0
    for unit in plan.units:
        share = unit.done_share() if counts else 0.0
        seconds = unit_seconds(plan.models.get(unit.model), unit.passes, unit.tokens, speed)
        state = "yes" if share >= 1 else (f"{share:.0%}" if share else "-")
        done += share >= 1
        partial += 0 < share < 1
        if share < 1 and seconds is None:
            unknown += 1
        elif share < 1:
            left += seconds * (1 - share)
        seed = "-" if unit.seed is None else str(unit.seed)
        lines.append(f"{state:<5} {unit.model:<12} {unit.task or '-':<10} {seed:>4}  "
                     f"{unit.analysis:<58} {'?' if seconds is None else duration_text(seconds)}")
    seeds, tasks = len(config.seeds), len(config.tasks)
    lines += [
        "",
        f"study {config.name}: {len(config.models)} model(s) x {tasks} task(s) x {seeds} "
        f"seed(s); {len(plan.units)} units; {where}: {done} done, {partial} partly done",
        f"rough time for the rest: {duration_text(left)} on {device} (from the units' sizes "
        f"at {speed / 1e9:.0f} GFLOP/s measured just now; within about a factor of two)"
        + (f", and {unknown} unit(s) not timed (sizes unknown here)" if unknown else ""),
        *(f"note: {note}" for note in plan.notes),
        "nothing was written; run it without --plan",
    ]
    return "\n".join(lines)


def plan_command(config_path: str, out: str | None) -> str:
    """`headcount study CONFIG --plan [--out DIR]`."""
    config = load_config(config_path)
    return plan_text(config, run_dir(config, out))
