"""`headcount study CONFIG --plan`: what a study would run, without running it.

Every unit (model x task x seed x analysis) in the order the runner takes them
(`plan.run_all`), whether the run directory already holds its result, and a rough time for
the rest. Nothing is written. The units' result paths follow `UnitContext.output`
(units/KIND/MODEL/TASK/.../seed-S.json); a test runs a small study and checks that its plan
then finds every unit done.

The time is rough (within about a factor of two): each unit's size in forward passes over
its examples (a backward pass counts as two), times the encoder's multiply-adds per token
(2·L·(4d² + 2·d·ff) + 4·L·T·d), at the speed of a short dense matrix product on the study's
device, scaled by `EFFICIENCY`, plus `UNIT_OVERHEAD_S` per unit for loading and saving.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from headcount.study.config import ModelSpec, StudyConfig, TaskSpec, load_config, run_dir

# Share of a dense matrix product's speed that whole units reach (attention, padding,
# tokenising, optimizer steps), and the seconds each unit spends loading and saving; set
# from the units' times of examples/glue-local.toml on 2 CPU cores (see the README).
EFFICIENCY = 1.0
UNIT_OVERHEAD_S = 4.0
MLM = "mlm"
WORD_TOKENS = 1.3       # word pieces per whitespace word, roughly, for English text
BYTES_PER_TOKEN = 4.5   # of raw English text, for the masked-LM text's size


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


@dataclass(frozen=True)
class Split:
    """How many examples a split has and how long they are (tokens, capped)."""

    count: int
    tokens: float


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
        from headcount.errors import HeadcountError
        from headcount.models import load_config, local_source

        try:
            plan.models[model.name] = load_config(model.path)
        except HeadcountError as error:
            plan.models[model.name] = None
            if Path(local_source(model.path)).exists():
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
        from headcount.errors import HeadcountError
        from headcount.jobs.prepared import DataOptions

        options = DataOptions(task=task.task, data_dir=task.data_dir,
                              text_column=task.text_column, label_column=task.label_column,
                              text_pair_column=task.text_pair_column)
        try:
            examples = options.resolve().load(split)
        except HeadcountError as error:
            plan.splits[key] = None
            if task.data_dir is not None or ":" in task.task:
                plan.problems.append(f"tasks {task.name}: {error}")
            elif not any(key[0] == task.name for key, found in plan.splits.items()
                         if found is None and key != (task.name, split, max_length)):
                plan.notes.append(f"{task.name}: GLUE from the hub, which is not reachable "
                                  "here; its units are listed but not timed")
            return None
        words = [len(e.text.split()) + len((e.text_pair or "").split())
                 for e in examples[:2000]]
        mean = WORD_TOKENS * sum(words) / max(len(words), 1) + 3
        plan.splits[key] = Split(len(examples), min(float(max_length), mean))
    return plan.splits[key]


def _text_blocks(config: StudyConfig) -> Split:
    """The masked-LM text in blocks of max_length tokens (from its size in bytes)."""
    path = Path(config.pretrain.text.removeprefix("mlm:"))
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    length = config.pretrain.max_length
    return Split(max(1, math.ceil(size / BYTES_PER_TOKEN / length)), float(length))


def _subset(count: int, fraction: float | None, max_examples: int | None) -> int:
    """How many examples `choose_subset` keeps (it samples `fraction`, then caps)."""
    if fraction is not None and fraction < 1:
        count = round(fraction * count)
    return count if max_examples is None else min(count, max_examples)


def flops_per_token(config, tokens: float) -> float:
    """Multiply-adds x 2 of one encoder forward pass per token, at `tokens` per example."""
    d = config.hidden_size
    layers = config.num_hidden_layers
    ff = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", 4 * d)
    return 2 * layers * (4 * d * d + 2 * d * ff) + 4 * layers * tokens * d


def device_speed(device: str) -> tuple[float, str]:
    """(flop/s of a dense matrix product the size of a small encoder's, on `device`; its
    name), measured for a quarter of a second."""
    import torch

    from headcount.models import resolve_device

    target = resolve_device(device)
    a = torch.randn(512, 384, device=target)
    b = torch.randn(384, 1536, device=target)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.25:
        a @ b
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        count += 1
    seconds = time.perf_counter() - started
    return count * 2 * 512 * 384 * 1536 / seconds, str(target)


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


def _times(*values) -> float | None:
    """The product of `values`, None if any is unknown."""
    product = 1.0
    for value in values:
        if value is None:
            return None
        product *= value
    return product


def _model_units(plan: Plan, model: ModelSpec) -> None:
    config = plan.config
    model_config = _model_config(plan, model)
    shared = bool(model_config is not None and _shares_layers(model_config))
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
    text = _text_blocks(config)
    mlm = _Where(plan, model, MLM, seed)
    pretrain = config.pretrain
    importance = _subset(text.count, pretrain.importance_fraction,
                         pretrain.importance_max_examples)
    curve = _subset(text.count, pretrain.curve_fraction, pretrain.curve_max_examples)
    mlm.add("importance (gradient)", "importance", passes=3 * importance, tokens=text.tokens)
    _curves(mlm, curve, text.tokens)
    for task in config.tasks:
        _task_units(plan, _Where(plan, model, task.name, seed), task, shared)
    estimators = config.estimators
    if estimators.names:
        _estimators(mlm, _subset(importance, None, estimators.max_examples), text.tokens)
    if config.sparsity.levels:
        mlm.add("weights pruned at each sparsity", "sparsity",
                passes=len(config.sparsity.levels) * curve, tokens=text.tokens)


def _curves(where: _Where, examples: int | None, tokens: float | None) -> None:
    points = len(_ratios(where.plan.config))
    for method in where.plan.config.importance.normalizations:
        where.add(f"pruning curve, {method}", "curves", method, passes=_times(points, examples),
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
    count = train and _subset(train.count, tune.train_fraction, tune.train_max_examples)
    steps = count and math.ceil(count / tune.batch_size) * tune.epochs
    if steps and tune.max_steps:
        steps = min(steps, tune.max_steps)
    # Training: forward and backward over every step's batch, then the evaluation split.
    finetune = _times(steps, tune.batch_size, 3)
    finetune = finetune and finetune + (dev.count if dev else 0)
    tokens = train and train.tokens
    where.add("fine-tune", "finetune", passes=finetune, tokens=tokens, name=f"seed-{where.seed}")
    imp = config.importance
    imp_split = _task_split(plan, task, imp.split, tune.max_length)
    imp_count = imp_split and _subset(imp_split.count, imp.fraction, imp.max_examples)
    where.add("importance (gradient)", "importance", passes=_times(3, imp_count), tokens=tokens)
    prune = config.pruning
    curve_split = _task_split(plan, task, prune.split, tune.max_length)
    curve = curve_split and _subset(curve_split.count, prune.fraction, prune.max_examples)
    _curves(where, curve, tokens)
    analyses = config.analyses
    if analyses.drift:
        drift = dev and _subset(dev.count, None, analyses.drift_max_examples)
        where.add("attention and feature drift", "drift", passes=_times(2, drift),
                  tokens=tokens)
    for layers in () if shared else analyses.freezing:
        where.add(f"fine-tune, {layers} layers frozen", "freezing", f"k{layers}",
                  passes=finetune, tokens=tokens)
    pruned = _times(2, finetune)  # scored before, fine-tuned, importance before and after
    if analyses.pruned_finetune:
        _pruned(where, "importance", analyses.pruned_finetune, pruned, tokens)
    _companion_units(where, shared, finetune, curve, imp_count, tokens)


def _pruned(where: _Where, order: str, ratio: float, passes, tokens) -> None:
    from headcount.study.units import ratio_text

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
    from headcount.study.units import ratio_text

    config = where.plan.config
    orders = config.orders
    points = len(_ratios(config))
    for order in orders.names:
        if order in LAYER_ORDERS and shared:
            continue
        for draw in range(orders.draws if order == "random" else 1):
            where.add(f"pruning curve, {order} order, draw {draw}", "curves-orders", order,
                      name=f"seed-{where.seed}-draw-{draw}.json",
                      passes=_times(points, curve), tokens=tokens, points=points)
    for order in orders.finetune:
        if order not in ("importance", "random") and shared:
            continue
        for ratio in orders.finetune_ratios:
            _pruned(where, order, ratio, _times(2, finetune), tokens)
    if config.estimators.names:
        _estimators(where, _subset(imp_count, None, config.estimators.max_examples)
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
                      "after-finetune", passes=_times(len(sparsity.levels), curve),
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
        where.add(f"importance ({estimator})", "importance-estimators", estimator,
                  passes=_times(cost[estimator], examples), tokens=tokens)
    if downstream and config.estimators.curves:
        points = len(_ratios(config))
        for estimator in config.estimators.names:
            where.add(f"pruning curve, ordered by {estimator}", "curves-estimators",
                      estimator, passes=_times(points, curve), tokens=tokens,
                      points=points)


def _shares_layers(model_config) -> bool:
    from headcount.arch import family_of

    return family_of(model_config).shared_layers


# --------------------------------------------------------------------------- the plan as text


def unit_seconds(plan: Plan, unit: PlannedUnit, speed: float) -> float | None:
    """A rough time for the whole unit at `speed` flop/s of dense products; None if its size
    or its model's is unknown."""
    model_config = plan.models.get(unit.model)
    if model_config is None or unit.passes is None or unit.tokens is None:
        return None
    work = unit.passes * unit.tokens * flops_per_token(model_config, unit.tokens)
    return UNIT_OVERHEAD_S + work / (speed * EFFICIENCY)


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


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_text(config: StudyConfig, root: str | Path) -> str:
    """What `headcount study CONFIG --plan` prints: every unit with its state and rough
    time, then the totals. ConfigError when a local model or data set does not load."""
    from headcount.errors import ConfigError

    plan = plan_study(config, root)
    if plan.problems:
        raise ConfigError(f"{len(plan.problems)} problem(s) in the study's models and data:\n  "
                          + "\n  ".join(plan.problems))
    counts, where = run_dir_note(plan)
    speed, device = device_speed(config.device)
    lines = [f"{'done':<5} {'model':<12} {'task':<10} {'seed':>4}  {'analysis':<58} time"]
    left, unknown, done, partial = 0.0, 0, 0, 0
    for unit in plan.units:
        share = unit.done_share() if counts else 0.0
        seconds = unit_seconds(plan, unit, speed)
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
