"""The headline findings of the reference study: sentences whose numbers are computed from
the study's tables, one finder per analysis (`FINDINGS`), collected in report order by
`collect_findings` (which also collects the companion studies' finders it is given).

Example:
    >>> collect_findings({}, [], FINDINGS)
    []
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from headcount.drift_plots import drift_layer_means
from headcount.report.aggregate import (
    CurveGroup,
    correlation_summary,
    curve_groups,
    drift_contrast,
    recall_points,
    recall_reached,
    recall_seeds,
    seed_areas,
    stage_order,
)
from headcount.report.format import (
    IMPORTANCE_KINDS,
    MLM_RETAIN,
    NORMALIZATION_ORDER,
    PAPER_MAX_ABS_R,
    RECALL_TARGET,
    RETAIN,
    STAGE_NAMES,
    as_number,
    as_text,
    fmt,
    fmt_sig,
    group_rows,
    mean_of,
    mean_std_count,
    models_in,
    pct,
    pick_normalization,
    rows_of_model,
    seed_count,
    seeds_text,
    table_rows,
    unique,
)
from headcount.report.verdicts import (
    comparison_problem,
    convergence_problem,
    inconclusive_note,
    layer_span,
    masked_lm_problem,
    untrained_problem,
)


@dataclass(frozen=True)
class Finder:
    """The finder of one topic of the headline findings: `find` returns its sentences.
    With `table`, `find` gets that table's rows and is skipped when it is missing or empty;
    without, it gets all the tables (it reads several)."""

    topic: str
    find: Callable[[object], list[str]]
    table: str | None = None


def collect_findings(tables: dict, problems: list[str],
                     finders: Iterable[Finder]) -> list[tuple[str, str]]:
    """(topic, sentence) pairs of `finders`, in their order; a finder that fails is left out
    and noted in `problems`, so that one bad table does not cost the whole report."""
    findings = []
    for finder in finders:
        if finder.table is None:
            argument = tables
        else:
            argument = table_rows(tables, finder.table)
            if not argument:
                continue
        try:
            findings.extend((finder.topic, sentence) for sentence in finder.find(argument))
        except Exception as error:  # a bad table must not cost the whole report
            problems.append(f"headline findings on {finder.topic} left out: "
                            f"{type(error).__name__}: {error}")
    return findings


def _retained_clause(group: CurveGroup, threshold: float, *, first: bool) -> str:
    """How far one variant stays >= threshold; a curve below it from its first ratio
    after 0% did not keep it at all (never 'up to 0%')."""
    kept, below = group.retained(threshold)
    pruned = " of heads pruned" if first else " pruned"
    with_label = _with_normalization(group.label)
    if not kept:  # None, or only the unpruned model
        first_below = "" if below is None else f" (below {pct(threshold)} already at " \
                                                f"{pct(below)}{pruned})"
        return f"at no ratio pruned {with_label}{first_below}"
    if below is None:
        return f"at every ratio measured {with_label} (up to {pct(kept)}{pruned})"
    return f"up to {pct(kept)}{pruned} {with_label}"


def _with_normalization(label: str) -> str:
    """'with l1 normalisation', 'without normalisation', or 'with <label>'."""
    if label == "none":
        return "without normalisation"
    return f"with {label}" + (" normalisation" if label in NORMALIZATION_ORDER else "")


def _best_variant(groups: list[CurveGroup], threshold: float, rows: list[dict]) -> str:
    """'; l1 prunes furthest ...' comparing the groups of one task (empty for one group),
    marked inconclusive when the seeds disagree by more than the variants do."""
    if len(groups) < 2:
        return ""

    def reach(group: CurveGroup) -> float:
        kept = group.retained(threshold)[0]
        return -1.0 if not kept else kept

    best_reach = max(reach(group) for group in groups)
    leaders = [group for group in groups if abs(reach(group) - best_reach) < 1e-9]
    best = max(leaders, key=CurveGroup.overall)
    if len(leaders) == len(groups) and best_reach < 0:
        return ""
    if len(leaders) > 1:
        text = (f"; {', '.join(g.label for g in leaders)} reach equally far, {best.label} "
                f"with the higher mean relative performance over all ratios")
    else:
        text = f"; {best.label} prunes furthest"
    if any(group.normalize == "l1" for group in groups):
        text += (" (the paper also found l1 best)" if best.normalize == "l1"
                 else " (the paper found l1 best)")
    areas = seed_areas(best.members(rows))
    problem = next(filter(None, (comparison_problem(areas, seed_areas(g.members(rows)))
                                 for g in groups if g is not best)), None)
    return text + inconclusive_note(problem)


def _downstream_findings(rows: list[dict]) -> list[str]:
    groups = [g for g in curve_groups(rows) if g.curve == "downstream"]
    findings = []
    for model in unique(g.model for g in groups):
        of_model = [g for g in groups if g.model == model]
        tasks = unique(g.task for g in of_model)
        for task in tasks:
            variants = [g for g in of_model if g.task == task]
            seeds = max(g.seeds for g in variants)
            clauses = [_retained_clause(g, RETAIN, first=i == 0)
                       for i, g in enumerate(variants)]
            unlearned = untrained_problem(rows, model, task)
            findings.append(
                f"{model}, {task}: the mean relative {variants[0].metric} over "
                f"{seeds_text(seeds)} stays ≥ {pct(RETAIN)} " + ", ".join(clauses)
                + (inconclusive_note(unlearned) if unlearned
                   else _best_variant(variants, RETAIN, rows)) + ".")
        # Tasks the model has not learned set no limit worth stating (`untrained_problem`).
        learned = [task for task in tasks if not untrained_problem(rows, model, task)]
        if len(learned) > 1:
            findings.extend(_all_tasks_finding(model, of_model, learned))
    return findings


def _all_tasks_finding(model, of_model: list[CurveGroup], tasks: list) -> list[str]:
    """How far every task keeps RETAIN with one normalisation that all tasks have (l1 when
    they all have it); none when there is none, or when a task never keeps it."""
    label = "l1" if all(any(g.task == t and g.label == "l1" for g in of_model)
                        for t in tasks) else None
    if label is None:
        common = [lab for lab in unique(g.label for g in of_model)
                  if all(any(g.task == t and g.label == lab for g in of_model) for t in tasks)]
        label = common[0] if common else None
    if label is None:
        return []
    reach = {g.task: g.retained(RETAIN)[0] for g in of_model if g.label == label}
    if not all(reach.values()):  # a task below it from its first ratio pruned
        return []
    weakest = min(reach, key=lambda t: reach[t])
    return [f"{model}, all {len(tasks)} tasks ({label}): each keeps ≥ {pct(RETAIN)} of its "
            f"unpruned performance with up to {pct(reach[weakest])} of heads pruned (the "
            f"limit is set by {weakest})."]


def _pretrain_findings(rows: list[dict]) -> list[str]:
    groups = [g for g in curve_groups(rows) if g.curve == "pretrain"]
    findings = []
    for group in groups:
        kept, below = group.retained(MLM_RETAIN)
        head = (f"{group.model}, masked LM"
                + ("" if group.task in ("mlm", None) else f" ({group.task})")
                + f", {group.label}: the mean relative {group.metric} over "
                f"{seeds_text(group.seeds)}")
        if not kept:
            text = (f"{head} is below {pct(MLM_RETAIN)} already at {pct(below)} of heads "
                    "pruned" if below is not None else f"{head} was not measured pruned")
        elif below is None:
            text = (f"{head} stays ≥ {pct(MLM_RETAIN)} at every ratio measured (up to "
                    f"{pct(kept)} of heads pruned)")
        else:
            text = (f"{head} falls below {pct(MLM_RETAIN)} at {pct(below)} of heads pruned "
                    f"(≥ {pct(MLM_RETAIN)} up to {pct(kept)} pruned: {pct(1 - kept)} of the "
                    f"heads keep {pct(MLM_RETAIN)} of the masked-LM performance)")
        findings.append(text + inconclusive_note(masked_lm_problem(rows, group.model)) + ".")
    return findings


def _recall_findings(tables: dict) -> list[str]:
    rows = table_rows(tables, "recall")
    findings = []
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        normalize = pick_normalization(row.get("normalize") for row in of_model)
        chosen = [row for row in of_model if row.get("normalize") == normalize]
        clauses, reached = [], []
        for (task,), task_rows in group_rows(chosen, "task").items():
            x = recall_reached(task_rows)
            if x is None:
                best = max(((mean, x) for x, mean, _, _ in recall_points(task_rows)
                            if mean is not None), default=None)
                clauses.append(f"never for {task}" + (
                    "" if best is None else f" (highest mean recall {best[0]:.2f} at x = "
                    f"{pct(best[1])})"))
            else:
                reached.append(x)
                clauses.append(f"{pct(x)} for {task}" + ("" if x > 0 else " (at any share)"))
        if not clauses:
            continue
        threshold = as_number(chosen[0].get("threshold")) if chosen else None
        seeds = recall_seeds(chosen)
        needed = "the heads needed for " + (
            f"{pct(threshold)} downstream performance" if threshold is not None
            else "the downstream threshold")
        text = (f"{model}: recall of {needed} (Eq. 5; {normalize}, mean over "
                f"{seeds_text(seeds)}) reaches {pct(RECALL_TARGET)} once the "
                f"masked-LM-pruned model keeps a share x of its masked-LM performance: x = "
                + ", ".join(clauses))
        if reached and len(reached) == len(clauses):
            text += (f"; every task reaches it by x = {pct(max(reached))} (the paper's "
                     f"guideline: {pct(MLM_RETAIN)})")
        problem = masked_lm_problem(table_rows(tables, "curves"), model)
        findings.append(text + inconclusive_note(problem) + ".")
    return findings


def _drift_findings(rows: list[dict]) -> list[str]:
    findings = []
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        seeds_by_task = {str(task): seed_count(task_rows)
                         for (task,), task_rows in group_rows(of_model, "task").items()}
        for task, points in drift_layer_means(of_model).items():
            contrast = drift_contrast(points)
            if contrast is None:
                continue
            js = [p for p in points if p["js_mean"] is not None]
            least = min(js, key=lambda p: p["js_mean"])
            most = max(js, key=lambda p: p["js_mean"])
            low, high = contrast["js_low"], contrast["js_high"]
            where = ("least in the lowest layers" if low < high else
                     "least in the highest layers" if low > high else
                     "as much in the lowest as in the highest layers")
            text = (f"{model}, {task}: attention changes {where} — mean JS divergence "
                    f"{fmt_sig(low)} over {layer_span(contrast['low_layers'])} vs "
                    f"{fmt_sig(high)} over {layer_span(contrast['high_layers'])} (mean over "
                    f"{seeds_text(seeds_by_task.get(task, 0))}); least changed: layer "
                    f"{least['layer']} ({fmt_sig(least['js_mean'])}), most changed: layer "
                    f"{most['layer']} ({fmt_sig(most['js_mean'])})")
            if contrast["l2_low"] is not None and contrast["l2_high"] is not None:
                text += (f"; hidden-state L2 distance {fmt_sig(contrast['l2_low'])} over "
                         f"{layer_span(contrast['low_layers'])} vs "
                         f"{fmt_sig(contrast['l2_high'])} over "
                         f"{layer_span(contrast['high_layers'])}")
            findings.append(text + ".")
    return findings


def _correlation_findings(tables: dict) -> list[str]:
    rows = table_rows(tables, "correlation")
    summary = correlation_summary(rows)
    findings = []
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        normalize = pick_normalization(row.get("normalize") for row in of_model)
        weak = masked_lm_problem(table_rows(tables, "curves"), model)
        largest = []
        for task in unique(row.get("task") for row in of_model):
            parts, seeds = [], 0
            kinds = unique((row.get("importance") for row in of_model
                             if row.get("task") == task), IMPORTANCE_KINDS)
            for kind in kinds:
                entry = summary.get((model, task, kind, normalize))
                if not entry or not entry["r"]:
                    continue
                seeds = max(seeds, entry["seeds"])
                r = sum(entry["r"]) / len(entry["r"])
                part = f"{kind} importance: Pearson r = {fmt(r, 2)}"
                readable = not (kind == "pretrain" and weak)
                if readable:
                    largest.extend(abs(v) for v in entry["r"])
                if entry["rho"]:
                    rho = sum(entry["rho"]) / len(entry["rho"])
                    part += f", Spearman ρ = {fmt(rho, 2)}"
                    if readable:
                        largest.extend(abs(v) for v in entry["rho"])
                parts.append(part + ("" if readable else inconclusive_note(weak)))
            if parts:
                findings.append(f"{model}, {task}: correlation of head importance ({normalize}) "
                                f"with JS divergence, mean over {seeds_text(seeds)} — "
                                + "; ".join(parts) + ".")
        if largest:
            peak = max(largest)
            verdict = "within" if peak <= PAPER_MAX_ABS_R + 1e-12 else "above"
            over = "all tasks and seeds" + (" (downstream importance only)" if weak else "")
            findings.append(f"{model}: the largest |r| or |ρ| between head importance and JS "
                            f"divergence over {over} is {peak:.2f}, {verdict} the paper's "
                            f"|r| ≤ {PAPER_MAX_ABS_R:.2f}.")
    return findings


def _freezing_findings(tables: dict) -> list[str]:
    rows = table_rows(tables, "freezing")
    findings = []
    for (model, frozen), members in group_rows(rows, "model", "freeze_layers").items():
        parts, problems = [], []
        for (task,), task_rows in group_rows(members, "task").items():
            mean, _, count = mean_std_count(row.get("relative") for row in task_rows)
            if mean is not None:
                parts.append(f"{mean:.2f} on {task} ({as_text(task_rows[0].get('metric'))})")
                problems.append(convergence_problem(table_rows(tables, "finetune"), model,
                                                    task, frozen))
        if parts:
            problem = "; ".join(dict.fromkeys(p for p in problems if p))
            findings.append(
                f"{model} fine-tuned with {as_text(frozen)} frozen "
                f"layer{'' if as_number(frozen) == 1 else 's'} reaches, relative to full "
                f"fine-tuning, " + ", ".join(parts) + " (mean over "
                f"{seeds_text(seed_count(members))}; the paper, RoBERTa-large with 5 frozen "
                f"layers: 0.91 on CoLA, > 0.98 on SST-2, QQP and MNLI)"
                + inconclusive_note(problem) + ".")
    return findings


def _pruned_finetune_findings(rows: list[dict]) -> list[str]:
    findings = []
    for (model, task, ratio), members in group_rows(rows, "model", "task", "ratio").items():
        parts = []
        for stage in stage_order(members):
            mean = mean_of(row.get("relative") for row in members if row.get("stage") == stage)
            if mean is not None:
                parts.append(f"{STAGE_NAMES.get(stage, as_text(stage))} {mean:.2f}")
        if parts:
            ratio = as_number(ratio)
            pruned = "" if ratio is None else f", {pct(ratio)} of heads pruned"
            findings.append(f"{model}, {task}{pruned}: relative "
                            f"{as_text(members[0].get('metric'))}: " + ", ".join(parts)
                            + f" (mean over {seeds_text(seed_count(members))}).")
    return findings


FINDINGS = (
    Finder("Prunability on downstream tasks (Figure 1)", _downstream_findings, "curves"),
    Finder("Prunability on the masked LM (Figure 2)", _pretrain_findings, "curves"),
    Finder("Recall of downstream-important heads (Figure 3)", _recall_findings),
    Finder("Attention and feature drift (Figure 4)", _drift_findings, "drift_layers"),
    Finder("Importance vs drift (Figure 6)", _correlation_findings),
    Finder("Fine-tuning with frozen layers", _freezing_findings),
    Finder("Fine-tuning and pruning", _pruned_finetune_findings, "pruned_finetune"),
)
