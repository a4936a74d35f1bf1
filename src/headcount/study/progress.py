"""Progress of a study run as stages, each with its count and an estimate of the time left.

A run is cut into the stages of its plan (`stage_plan`): per model, fitting its masked-LM
head; per seed, the masked LM, each task's reference units, each task's companion units and
the masked LM's companion units; last, the report. Each stage has a rough cost in "example
passes" (one forward pass of one example at 128 tokens; a backward pass counts twice), from
the sizes in the configuration. When a stage begins, the time left is the remaining cost at
the rate measured so far (seconds per cost unit over the stages that did work; before the
first one, a rate estimated for the demo on 2 quiet CPU cores). Stages that a resumed run
skips do not count towards the rate. The costs are rough (the dev split's size, for one, is
not known before it is loaded): the estimate is a guide that stages finishing refine.

Example:
    >>> stages = Stages(plan=stage_plan(config), log=print)
    >>> stages.begin(("mlm", "minilm", 0))
    stage 2/10: minilm, seed 0: masked LM (about 8 min left)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Seconds per cost unit of the demo on 2 quiet CPU cores (estimated), the first estimate.
PRIOR_SECONDS_PER_UNIT = 0.022
REPORT_COST = 1500.0  # the report's figures and pages, in the same units
WORKED = 1.0  # a stage that took less (seconds) was skipped (a resumed run)
MLM_ABLATION = 1.8  # masked-LM ablation against a task's, per example (measured)


@dataclass(frozen=True)
class Stage:
    key: tuple
    title: str
    cost: float


def _finetune(config, examples_per_eval: float, scale: float) -> float:
    """One fine-tuning and its evaluation."""
    spec = config.finetune
    train = spec.train_max_examples or 2000
    if spec.max_steps:
        train = min(train, spec.max_steps * spec.batch_size)
    return (3 * train * spec.epochs + examples_per_eval) * scale


def _costs(config, heads: int) -> dict[str, float]:
    """The cost of each kind of stage (see the module's docstring)."""
    pre, imp, prune = config.pretrain, config.importance, config.pruning
    task_scale, mlm_scale = config.finetune.max_length / 128, pre.max_length / 128
    points = round(1 / prune.step) + 1
    curve = (prune.max_examples or 512) * points * task_scale
    # Every further curve of the same model and examples shares its unpruned and fully
    # pruned points (`headcount.study.shared`).
    shared = curve * max(points - 2, 1) / points
    evaluation = 2 * (prune.max_examples or 512) * task_scale  # the dev split: unknown here
    finetune = _finetune(config, evaluation, task_scale)
    importance = 3 * (imp.max_examples or 512) * task_scale
    normalizations = len(imp.normalizations)
    analyses, orders, estimators = config.analyses, config.orders, config.estimators
    reference = (finetune + importance + curve + (normalizations - 1) * shared
                 + (3 * (analyses.drift_max_examples or 256) * task_scale
                    if analyses.drift else 0)
                 + 0.6 * finetune * len(analyses.freezing)
                 + (finetune + 2 * evaluation + 2 * importance
                    if analyses.pruned_finetune else 0))
    random_draws = orders.draws if "random" in orders.names else 0
    order_curves = (len(orders.names) - ("random" in orders.names) + random_draws) * shared
    order_finetunes = len([o for o in orders.finetune if o != "importance"]) * len(
        orders.finetune_ratios) * (finetune + 2 * evaluation + 2 * importance)
    estimated = estimators.max_examples or 256
    ablation = 0.6 * heads * estimated if "ablation" in estimators.names else 0
    estimator_cost = ablation + 4 * estimated
    sparsity = config.sparsity
    companion = (order_curves + order_finetunes
                 + (estimator_cost * task_scale if estimators.names else 0)
                 + (len(estimators.names) * shared if estimators.names and estimators.curves
                    else 0)
                 + (len(sparsity.levels) * curve / points if sparsity.levels else 0)
                 + len([lv for lv in sparsity.levels_to_finetune if lv]) * finetune)
    mlm_curve = (pre.curve_max_examples or 256) * points * mlm_scale
    return {
        "fit": (2 * pre.fit_steps * 8 + 3 * 128) * mlm_scale,
        "mlm": (3 * (pre.importance_max_examples or 512) * mlm_scale
                + mlm_curve * (1 + (normalizations - 1) * max(points - 2, 1) / points)),
        "task": reference,
        "companion": companion,
        # Each of ablation's passes also scores the vocabulary at the masked positions.
        "mlm companion": ((MLM_ABLATION * estimator_cost if estimators.names else 0)
                          * mlm_scale + (len(sparsity.levels) * mlm_curve / points
                                         if sparsity.levels else 0)),
    }


def stage_plan(config, heads: dict[str, int] | None = None) -> list[Stage]:
    """The stages of a run of `config`, in order; `heads` gives each model's number of heads
    (for the cost of exact ablation; 144 when not given)."""
    companions = bool(config.orders.names or config.orders.finetune or config.estimators.names
                      or config.sparsity.levels)
    plan = []
    for model in config.models:
        costs = _costs(config, (heads or {}).get(model.name, 144))
        if model.fit_mlm_head:
            plan.append(Stage(("fit", model.name), f"{model.name}: fit its masked-LM head",
                              costs["fit"]))
        for seed in config.seeds:
            where = f"{model.name}, seed {seed}"
            plan.append(Stage(("mlm", model.name, seed), f"{where}: masked LM", costs["mlm"]))
            for task in config.tasks:
                plan.append(Stage(("task", model.name, seed, task.name),
                                  f"{where}: {task.name}, reference study", costs["task"]))
                if companions:
                    plan.append(Stage(("companion", model.name, seed, task.name),
                                      f"{where}: {task.name}, companion studies",
                                      costs["companion"]))
            if config.estimators.names or config.sparsity.levels:
                plan.append(Stage(("mlm companion", model.name, seed),
                                  f"{where}: masked LM, companion studies",
                                  costs["mlm companion"]))
    plan.append(Stage(("report",), "the report", REPORT_COST))
    return plan


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5)} s"
    return f"{round(seconds / 60)} min"


class Stages:
    """Logs the beginning of each stage of `plan` with its count and the time left
    (`clock`: seconds, for tests)."""

    def __init__(self, plan: list[Stage], log: Callable[[str], None],
                 clock: Callable[[], float] = time.perf_counter):
        self.plan, self.log, self.clock = plan, log, clock
        self.current: int | None = None
        self.started = 0.0
        self.worked_seconds, self.worked_cost = 0.0, 0.0

    def begin(self, key: tuple) -> None:
        """Stage `key` begins (a key not in the plan is logged without a count)."""
        now = self.clock()
        if self.current is not None and now - self.started >= WORKED:
            self.worked_seconds += now - self.started
            self.worked_cost += self.plan[self.current].cost
        index = next((i for i, stage in enumerate(self.plan) if stage.key == key), None)
        self.current, self.started = index, now
        if index is None:
            return
        rate = (self.worked_seconds / self.worked_cost if self.worked_cost
                else PRIOR_SECONDS_PER_UNIT)
        left = rate * sum(stage.cost for stage in self.plan[index:])
        self.log(f"stage {index + 1}/{len(self.plan)}: {self.plan[index].title} "
                 f"(about {_duration(left)} left)")


_RUNS: dict[str, Stages] = {}


def stages_of(root, plan: list[Stage] | None = None,
              log: Callable[[str], None] | None = None) -> Stages | None:
    """The stages of the run in directory `root`: made with `plan` and `log` when given
    (the study's plan does it), else the ones made before (the report's stage), or None."""
    if plan is not None and log is not None:
        _RUNS[str(root)] = Stages(plan, log)
    return _RUNS.get(str(root))
