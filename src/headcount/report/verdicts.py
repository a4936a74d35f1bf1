"""When a result of the run can support a finding: the rules that mark a result
*inconclusive here*, and the verdict of a paper's claim against this run.

A result whose baseline cannot support it is marked where it is stated (headline findings,
sections, the claims table), with the reason in a few words. The rules, in the words the
report's method notes print (`RULES`):

- a masked-LM result, when the masked LM is too weak to be read (`masked_lm_problem`);
- a downstream result, when the fine-tuned model has not learned its task
  (`untrained_problem`; `task_problem` picks this rule or the masked-LM one);
- a freezing result, when a fine-tuning it compares had not converged
  (`convergence_problem`);
- a comparison of two curves, when their seeds disagree by more than their difference
  (`comparison_problem`);
- a result against a threshold, when its seeds fall on both sides of it
  (`straddle_problem`).

Each rule returns None when the result can be read, else the reason.

Example:
    >>> comparison_problem([0.80, 0.82], [0.70, 0.71])  # l1 vs l2 areas over two seeds
    >>> comparison_problem([0.80, 0.90], [0.84, 0.85])
    'seeds differ by 0.050 (std), more than the difference 0.005'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from headcount.report.aggregate import curve_kind, usable_curve_rows
from headcount.report.format import (
    CONVERGED_DROP,
    MLM_MAX_RISE,
    MLM_MIN_RECALL,
    MLM_RETAIN,
    as_number,
    as_text,
    fmt,
    group_rows,
    is_main,
    mean_of,
    mean_std_count,
    pct,
    seeds_text,
    table_rows,
)

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
# A fine-tuned model that keeps this share of its score with every head pruned has not
# learned its task.
UNTRAINED_KEEPS = 0.95

RULES = (
    ("Masked LM",
     f"a masked-LM result (Figure 2, recall, the correlation of pre-train importance, the "
     f"masked-LM rows of the estimators and of weight pruning) is inconclusive here when the "
     f"unpruned masked LM's recall@1 is below {MLM_MIN_RECALL:.2f}, when its relative "
     f"recall@1 rises above {1 + MLM_MAX_RISE:.2f} at some ratio of heads pruned, or when it "
     f"keeps ≥ {pct(MLM_RETAIN)} with every head pruned: then its heads do not carry its "
     f"masked-LM performance, and their order says nothing about it."),
    ("Not learned",
     f"a downstream result is inconclusive here when, for some seed, the fine-tuned model "
     f"keeps ≥ {pct(UNTRAINED_KEEPS)} of its score with every head pruned (its first token, "
     f"which the classifier reads, is then the same for every input): it scores hardly "
     f"better than one answer for all inputs, so it has not learned the task and pruning it "
     f"says nothing."),
    ("Freezing",
     f"a fine-tuning run has converged when the mean training loss over the last quarter of "
     f"its steps is no more than {pct(CONVERGED_DROP)} below that over the quarter before; "
     f"a freezing result is inconclusive here unless both fine-tunings it compares (full, "
     f"and with frozen layers) converged for every seed."),
    ("Comparing two curves",
     "one curve (a normalisation, a pruning order, a weight-pruning setting) is better than "
     "another when its mean relative performance over all ratios measured (the area under "
     "the curve, per seed and draw) is higher; the comparison is inconclusive here when the "
     "difference of the means is no larger than the standard deviation over seeds (and "
     "draws) of either curve, or when there is one seed only."),
    ("Thresholds",
     "a result against a threshold (≥ 90% of the unpruned performance, |r| ≤ 0.10, ...) is "
     "read on the mean over seeds, and is inconclusive here when the seeds fall on both "
     "sides of the threshold."),
)


@dataclass(frozen=True)
class Verdict:
    """A claim against this run: agrees, disagrees or inconclusive (with the reason)."""

    verdict: str
    reason: str = ""

    @property
    def text(self) -> str:
        if self.verdict == INCONCLUSIVE:
            return f"inconclusive here: {self.reason}" if self.reason else "inconclusive here"
        return self.verdict + (f" ({self.reason})" if self.reason else "")


def judged(holds: bool, problem: str | None = None, reason: str = "") -> Verdict:
    """Agrees when `holds`, else disagrees; inconclusive (with `problem`) when there is one."""
    if problem:
        return Verdict(INCONCLUSIVE, problem)
    return Verdict(AGREES if holds else DISAGREES, reason)


def combined(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict of several (tasks, models): a conclusive disagreement wins, then an
    inconclusive one, then agreement. No verdicts: inconclusive (nothing measured)."""
    verdicts = list(verdicts)
    if not verdicts:
        return Verdict(INCONCLUSIVE, "not measured in this run")
    for kind in (DISAGREES, INCONCLUSIVE):
        chosen = [v for v in verdicts if v.verdict == kind]
        if chosen:
            reasons = list(dict.fromkeys(v.reason for v in chosen if v.reason))
            return Verdict(kind, "; ".join(reasons))
    return Verdict(AGREES, "; ".join(dict.fromkeys(v.reason for v in verdicts if v.reason)))


# --------------------------------------------------------------------------------------
# The rules


def masked_lm_problem(curve_rows: list[dict], model) -> str | None:
    """Why the masked LM of `model` cannot support a finding (None when it can), from the
    study's pruning curves on the masked LM (every normalisation)."""
    rows = [row for row in usable_curve_rows(curve_rows)
            if curve_kind(row) == "pretrain" and row.get("model") == model]
    if not rows:
        return None
    unpruned = mean_of(row.get("value") for row in rows if _ratio(row) == 0)
    if unpruned is not None and unpruned < MLM_MIN_RECALL:
        return (f"the masked LM is weak (recall@1 {fmt(unpruned)} unpruned, below "
                f"{MLM_MIN_RECALL:.2f})")
    rise, full = None, None  # over normalisations: the highest mean relative recall@1
    for members in group_rows(rows, "normalize").values():
        for ratio, at in _by_ratio(members).items():
            mean = mean_of(row.get("relative") for row in at)
            if mean is None or ratio == 0:
                continue
            rise = mean if rise is None else max(rise, mean)
            if ratio >= 1 - 1e-9:
                full = mean if full is None else max(full, mean)
    if rise is not None and rise > 1 + MLM_MAX_RISE:
        return f"its relative recall@1 rises to {fmt(rise, 2)} as heads go"
    if full is not None and full >= MLM_RETAIN:
        return f"it keeps {fmt(full, 2)} of its recall@1 with every head pruned"
    return None


def inconclusive_note(problem: str | None) -> str:
    """' — inconclusive here: REASON' to end a finding with when a rule gives `problem`;
    '' when it gives none.

    Example:
        >>> inconclusive_note("one seed")
        ' — inconclusive here: one seed'
    """
    return f" — inconclusive here: {problem}" if problem else ""


def untrained_problem(curve_rows: list[dict], model, task) -> str | None:
    """Why the fine-tuned `model` on `task` cannot support a finding (None when it can): some
    seed keeps ≥ UNTRAINED_KEEPS of its score with every head pruned, i.e. scores no better
    than one answer for every input. Read from the study's downstream importance curves."""
    rows = [row for row in usable_curve_rows(curve_rows)
            if curve_kind(row) == "downstream" and (row.get("model"), row.get("task")) ==
            (model, task) and row.get("family", "importance") in ("importance", "", None)]
    for seed, members in sorted(group_rows(rows, "seed").items(), key=lambda kv: str(kv[0])):
        full = mean_of(row.get("relative") for row in members
                       if (_ratio(row) or 0) >= 1 - 1e-9)
        if full is not None and full >= UNTRAINED_KEEPS:
            return (f"the fine-tuned model scores hardly better on {as_text(task)} than one "
                    f"answer for every input (seed {as_text(seed[0])} keeps {fmt(full, 2)} "
                    "of its score with every head pruned)")
    return None


def task_problem(curve_rows: list[dict], model, task) -> str | None:
    """The rule for a result on `task` ("mlm": the masked LM; else a downstream task)."""
    if task == "mlm":
        return masked_lm_problem(curve_rows, model)
    return untrained_problem(curve_rows, model, task)


def _ratio(row: dict) -> float | None:
    ratio = as_number(row.get("ratio_requested"))
    return as_number(row.get("ratio_pruned")) if ratio is None else ratio


def _by_ratio(rows: list[dict]) -> dict[float, list[dict]]:
    by_ratio: dict[float, list[dict]] = {}
    for row in rows:
        ratio = _ratio(row)
        if ratio is not None:
            by_ratio.setdefault(round(ratio, 9), []).append(row)
    return by_ratio


def convergence_problem(finetune_rows: list[dict], model, task, frozen) -> str | None:
    """Why the freezing result of (`model`, `task`, `frozen` layers) cannot be read (None
    when both its full and its frozen fine-tuning converged for every seed)."""
    rows = [row for row in finetune_rows if is_main(row) and row.get("model") == model
            and row.get("task") == task]
    runs = {"full fine-tuning": [r for r in rows if r.get("kind") == "full"],
            f"fine-tuning with {frozen} frozen layers": [
                r for r in rows if r.get("kind") == "frozen"
                and as_number(r.get("freeze_layers")) == as_number(frozen)]}
    for what, members in runs.items():
        if not members:
            return f"no record of {what}"
        for row in sorted(members, key=lambda r: str(r.get("seed"))):
            before = as_number(row.get("loss_previous_quarter"))
            last = as_number(row.get("loss_last_quarter"))
            if before is None or last is None:
                return f"no training loss recorded for {what}: its convergence is unknown"
            if last < (1 - CONVERGED_DROP) * before:
                return (f"{what} had not converged (seed {row.get('seed')}: training loss "
                        f"{fmt(before, 2)} → {fmt(last, 2)} over its last quarter of steps)")
    return None


def comparison_problem(first: list[float], second: list[float]) -> str | None:
    """Why two curves cannot be told apart (None when they can), from their areas per seed
    (and draw)."""
    a, spread_a, count_a = mean_std_count(first)
    b, spread_b, count_b = mean_std_count(second)
    if a is None or b is None:
        return "not measured"
    if min(count_a, count_b) < 2:
        return "one seed: no spread to compare the difference with"
    spread, difference = max(spread_a, spread_b), abs(a - b)
    if difference <= spread:
        return (f"seeds differ by {fmt(spread)} (std), more than the difference "
                f"{fmt(difference)}")
    return None


def straddle_problem(values: Iterable, threshold: float, *, what: str = "seeds") -> str | None:
    """Why a result against `threshold` cannot be read (None when it can): its values per
    seed fall on both sides."""
    numbers = [v for v in (as_number(value) for value in values) if v is not None]
    if split_problem(v >= threshold for v in numbers):
        return f"the {what} fall on both sides of {fmt(threshold, 2)}"
    return None


def split_problem(flags: Iterable[bool], what: str = "seeds") -> str | None:
    """Why a yes/no result cannot be read (None when it can): its seeds say both."""
    flags = list(flags)
    return f"the {what} disagree" if any(flags) and not all(flags) else None


# --------------------------------------------------------------------------------------
# Claims and the setting of this run


@dataclass(frozen=True)
class Claim:
    """A claim of a paper: who (`source`), what, the paper's number and setting, how this
    run is judged against it (`judge(tables)` -> (this run's number and setting, Verdict))
    and how this run's numbers are read (`reading`, for the method notes)."""

    source: str
    claim: str
    paper: str
    judge: Callable[[dict], tuple[str, Verdict]]
    reading: str


@dataclass(frozen=True)
class RunSetting:
    model: object
    layers: int | None
    heads: int | None
    seeds: int

    @property
    def text(self) -> str:
        heads = f", {self.heads} heads" if self.heads else ""
        return f"{as_text(self.model)}{heads}, {seeds_text(self.seeds)}"


def where(tables: dict, model, task) -> str:
    """How a claim row names a task: with its model when the run has several models."""
    models = {r.get("model") for name in ("finetune", "curves") for r in table_rows(tables,
                                                                                 name)}
    return f"{as_text(model)}, {as_text(task)}" if len(models) > 1 else as_text(task)


def layer_span(layers: list) -> str:
    """'layer 3' or 'layers 0–1'."""
    if len(layers) == 1:
        return f"layer {as_text(layers[0])}"
    return f"layers {as_text(layers[0])}–{as_text(layers[-1])}"


def run_setting(tables: dict, model) -> RunSetting:
    """The model's size (from its importance or head drift rows) and its number of seeds
    (over all its rows)."""
    heads_rows = [r for name in ("importance", "drift_heads") for r in table_rows(tables, name)
                  if r.get("model") == model]
    grid = {(r.get("layer"), r.get("head")) for r in heads_rows}
    layers = {layer for layer, _ in grid}
    seeds = {str(r.get("seed")) for rows in (tables or {}).values() for r in rows or ()
             if isinstance(r, dict) and r.get("model") == model and r.get("seed") is not None}
    return RunSetting(model, len(layers) or None, len(grid) or None, len(seeds))


def caveats(problems: dict) -> list[str]:
    """The paragraphs a section states its inconclusive results in: one per subject (a
    model, a task) with a problem."""
    return [f"Inconclusive here for {as_text(subject)}: {problem} (see the method notes)."
            for subject, problem in problems.items() if problem]
