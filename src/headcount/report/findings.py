"""Pruning curves averaged over seeds (`curve_groups`) and the headline findings of the
report (`headline_findings`): sentences whose numbers are computed from the study's tables.

Example:
    >>> headline_findings({})
    []
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from headcount.plotting import drift_layer_means
from headcount.report.format import (
    IMPORTANCE_KINDS,
    MLM_RETAIN,
    NORMALIZATION_ORDER,
    PAPER_MAX_ABS_R,
    RECALL_TARGET,
    RETAIN,
    STAGES,
    _clean,
    _fmt,
    _fmt_sig,
    _group,
    _is_main,
    _mean,
    _models,
    _num,
    _of_model,
    _pct,
    _pick_normalization,
    _rows,
    _seed_count,
    _seeds_text,
    _stats,
    _text,
    _unique,
)

# --------------------------------------------------------------------------------------
# Pruning curves: means over seeds


@dataclass
class CurvePoint:
    key: float  # requested ratio (or the ratio pruned when none was recorded)
    ratio: float  # ratio of heads pruned, mean over seeds
    mean: float
    std: float | None
    n: int


@dataclass
class CurveGroup:
    model: object
    curve: str
    task: object
    rank_task: object
    schedule: object
    normalize: object
    label: str
    metric: str
    seeds: int
    points: list[CurvePoint]

    def retained(self, threshold: float) -> tuple[float | None, float | None]:
        """(the largest ratio pruned up to which the mean relative performance is still
        >= threshold at every ratio measured, the first ratio at which it is below):
        (None, r) when it is below already at the first ratio, (r, None) when never."""
        kept = None
        for point in self.points:
            if point.mean < threshold:
                return kept, point.ratio
            kept = point.ratio
        return kept, None

    def overall(self) -> float:
        return sum(point.mean for point in self.points) / len(self.points)


def _curve_kind(row: dict) -> str:
    curve = row.get("curve")
    if curve in ("downstream", "pretrain"):
        return curve
    return "pretrain" if row.get("task") == "mlm" else "downstream"


def _usable_curve_rows(rows: Iterable[dict]) -> list[dict]:
    return [row for row in rows if _is_main(row) and _num(row.get("relative")) is not None
            and (_num(row.get("ratio_pruned")) is not None
                 or _num(row.get("ratio_requested")) is not None)]


def curve_groups(rows: list[dict]) -> list[CurveGroup]:
    """Main-metric curves grouped by model, curve, evaluated task, ranking task, schedule
    and normalisation, with the mean relative performance over seeds at each ratio."""
    rows = _usable_curve_rows(rows)
    variety: dict[tuple, tuple[set, set]] = {}
    for row in rows:
        ranks, schedules = variety.setdefault((row.get("model"), _curve_kind(row),
                                               row.get("task")), (set(), set()))
        ranks.add(str(row.get("rank_task")))
        schedules.add(str(row.get("schedule")))
    groups = []
    keys = ("model", "task", "rank_task", "schedule", "normalize")
    by_curve = _group(({**row, "_curve": _curve_kind(row)} for row in rows), "_curve", *keys)
    ordered = sorted(by_curve.items(), key=lambda item: (
        _unique([k[1:3] for k in by_curve]).index(item[0][1:3]),
        _unique([k[5] for k in by_curve], NORMALIZATION_ORDER).index(item[0][5])))
    for (curve, model, task, rank_task, schedule, normalize), members in ordered:
        ranks, schedules = variety[(model, curve, task)]
        label = _text(normalize)
        qualifiers = []
        if len(ranks) > 1 or (curve == "downstream" and rank_task not in (None, task)):
            qualifiers.append(f"ranked by {rank_task}")
        if len(schedules) > 1:
            qualifiers.append(f"{schedule} schedule")
        if qualifiers:
            label += ", " + ", ".join(qualifiers)
        by_ratio: dict[float, list[dict]] = {}
        for row in members:
            key = _num(row.get("ratio_requested"))
            key = _num(row.get("ratio_pruned")) if key is None else key
            by_ratio.setdefault(round(key, 9), []).append(row)
        points = []
        for key, at_ratio in sorted(by_ratio.items()):
            mean, std, count = _stats(row.get("relative") for row in at_ratio)
            ratio = _mean(row.get("ratio_pruned") for row in at_ratio)
            points.append(CurvePoint(key, key if ratio is None else ratio, mean, std, count))
        groups.append(CurveGroup(model, curve, task, rank_task, schedule, normalize, label,
                                 _text(members[0].get("metric")), _seed_count(members),
                                 points))
    return groups


# --------------------------------------------------------------------------------------
# Headline findings


def headline_findings(tables: dict[str, list[dict]]) -> list[str]:
    """Sentences with the study's main numbers, computed from `tables`; a finding whose
    table is missing or empty is left out (one that fails is left out with a warning)."""
    problems: list[str] = []
    findings = [sentence for _, sentence in _findings(_clean(tables), problems)]
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    return findings


def _findings(tables: dict, problems: list[str]) -> list[tuple[str, str]]:
    """(topic, sentence) pairs, in the order of the report's sections."""
    finders: list[tuple[str, Callable[[list[dict]], list[str]], str]] = [
        ("curves", _downstream_findings, "Prunability on downstream tasks (Figure 1)"),
        ("curves", _pretrain_findings, "Prunability on the masked LM (Figure 2)"),
        ("recall", _recall_findings, "Recall of downstream-important heads (Figure 3)"),
        ("drift_layers", _drift_findings, "Attention and feature drift (Figure 4)"),
        ("correlation", _correlation_findings, "Importance vs drift (Figure 6)"),
        ("freezing", _freezing_findings, "Fine-tuning with frozen layers"),
        ("pruned_finetune", _pruned_finetune_findings, "Fine-tuning and pruning"),
    ]
    findings = []
    for table, finder, topic in finders:
        rows = _rows(tables, table)
        if not rows:
            continue
        try:
            findings.extend((topic, sentence) for sentence in finder(rows))
        except Exception as error:  # a bad table must not cost the whole report
            problems.append(f"headline findings on {topic} left out: "
                            f"{type(error).__name__}: {error}")
    from headcount.report.companion import FINDINGS

    for finder, topic in FINDINGS:  # these read several tables each
        try:
            findings.extend((topic, sentence) for sentence in finder(tables))
        except Exception as error:
            problems.append(f"headline findings on {topic} left out: "
                            f"{type(error).__name__}: {error}")
    return findings


def _retained_clause(group: CurveGroup, threshold: float, *, first: bool) -> str:
    kept, below = group.retained(threshold)
    pruned = " of heads pruned" if first else " pruned"
    with_label = _with_normalization(group.label)
    if kept is None:
        return f"at no ratio measured {with_label} (below {_pct(threshold)} already at " \
               f"{_pct(below)} pruned)"
    if below is None:
        return f"at every ratio measured {with_label} (up to {_pct(kept)}{pruned})"
    return f"up to {_pct(kept)}{pruned} {with_label}"


def _with_normalization(label: str) -> str:
    """'with l1 normalisation', 'without normalisation', or 'with <label>'."""
    if label == "none":
        return "without normalisation"
    return f"with {label}" + (" normalisation" if label in NORMALIZATION_ORDER else "")


def _best_variant(groups: list[CurveGroup], threshold: float) -> str:
    """'; l1 prunes furthest ...' comparing the groups of one task (empty for one group)."""
    if len(groups) < 2:
        return ""

    def reach(group: CurveGroup) -> float:
        kept = group.retained(threshold)[0]
        return -1.0 if kept is None else kept

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
    return text


def _downstream_findings(rows: list[dict]) -> list[str]:
    groups = [g for g in curve_groups(rows) if g.curve == "downstream"]
    findings = []
    for model in _unique(g.model for g in groups):
        of_model = [g for g in groups if g.model == model]
        tasks = _unique(g.task for g in of_model)
        for task in tasks:
            variants = [g for g in of_model if g.task == task]
            seeds = max(g.seeds for g in variants)
            clauses = [_retained_clause(g, RETAIN, first=i == 0)
                       for i, g in enumerate(variants)]
            findings.append(
                f"{model}, {task}: the mean relative {variants[0].metric} over "
                f"{_seeds_text(seeds)} stays ≥ {_pct(RETAIN)} " + ", ".join(clauses)
                + _best_variant(variants, RETAIN) + ".")
        if len(tasks) > 1:
            label = "l1" if all(any(g.task == t and g.label == "l1" for g in of_model)
                                for t in tasks) else None
            if label is None:
                common = [lab for lab in _unique(g.label for g in of_model)
                          if all(any(g.task == t and g.label == lab for g in of_model)
                                 for t in tasks)]
                label = common[0] if common else None
            if label is not None:
                reach = {g.task: g.retained(RETAIN)[0] for g in of_model if g.label == label}
                if all(value is not None for value in reach.values()):
                    weakest = min(reach, key=lambda t: reach[t])
                    findings.append(
                        f"{model}, all {len(tasks)} tasks ({label}): each keeps ≥ "
                        f"{_pct(RETAIN)} of its unpruned performance with up to "
                        f"{_pct(reach[weakest])} of heads pruned (the limit is set by "
                        f"{weakest}).")
    return findings


def _pretrain_findings(rows: list[dict]) -> list[str]:
    groups = [g for g in curve_groups(rows) if g.curve == "pretrain"]
    findings = []
    for group in groups:
        kept, below = group.retained(MLM_RETAIN)
        head = (f"{group.model}, masked LM"
                + ("" if group.task in ("mlm", None) else f" ({group.task})")
                + f", {group.label}: the mean relative {group.metric} over "
                f"{_seeds_text(group.seeds)}")
        if kept is None:
            findings.append(f"{head} is below {_pct(MLM_RETAIN)} already at {_pct(below)} "
                            f"of heads pruned.")
        elif below is None:
            findings.append(f"{head} stays ≥ {_pct(MLM_RETAIN)} at every ratio measured "
                            f"(up to {_pct(kept)} of heads pruned).")
        else:
            findings.append(
                f"{head} falls below {_pct(MLM_RETAIN)} at {_pct(below)} of heads pruned "
                f"(≥ {_pct(MLM_RETAIN)} up to {_pct(kept)} pruned: {_pct(1 - kept)} of the "
                f"heads keep {_pct(MLM_RETAIN)} of the masked-LM performance).")
    return findings


def _recall_points(rows: list[dict]) -> list[tuple[float, float | None, float | None, dict]]:
    points = []
    for row in rows:
        x = _num(row.get("x"))
        if x is not None:
            points.append((x, _num(row.get("recall_mean")), _num(row.get("recall_std")), row))
    return sorted(points, key=lambda point: point[0])


def _recall_reached(rows: list[dict]) -> float | None:
    """The smallest x at which the mean recall is >= RECALL_TARGET."""
    for x, mean, _, _ in _recall_points(rows):
        if mean is not None and mean >= RECALL_TARGET - 1e-12:
            return x
    return None


def _recall_findings(rows: list[dict]) -> list[str]:
    findings = []
    for model in _models(rows):
        of_model = _of_model(rows, model)
        normalize = _pick_normalization(row.get("normalize") for row in of_model)
        chosen = [row for row in of_model if row.get("normalize") == normalize]
        clauses, reached = [], []
        for (task,), task_rows in _group(chosen, "task").items():
            x = _recall_reached(task_rows)
            if x is None:
                best = max(((mean, x) for x, mean, _, _ in _recall_points(task_rows)
                            if mean is not None), default=None)
                clauses.append(f"never for {task}" + (
                    "" if best is None else f" (highest mean recall {best[0]:.2f} at x = "
                    f"{_pct(best[1])})"))
            else:
                reached.append(x)
                clauses.append(f"{_pct(x)} for {task}")
        if not clauses:
            continue
        threshold = _num(chosen[0].get("threshold")) if chosen else None
        seeds = max((int(n) for n in (_num(row.get("n")) for row in chosen) if n is not None),
                    default=0)
        needed = "the heads needed for " + (
            f"{_pct(threshold)} downstream performance" if threshold is not None
            else "the downstream threshold")
        text = (f"{model}: recall of {needed} (Eq. 5; {normalize}, mean over "
                f"{_seeds_text(seeds)}) reaches {_pct(RECALL_TARGET)} once the "
                f"masked-LM-pruned model keeps a share x of its masked-LM performance: x = "
                + ", ".join(clauses))
        if reached and len(reached) == len(clauses):
            text += (f"; every task reaches it by x = {_pct(max(reached))} (the paper's "
                     f"guideline: {_pct(MLM_RETAIN)})")
        findings.append(text + ".")
    return findings


def _layer_span(layers: list) -> str:
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}–{layers[-1]}"


def _drift_findings(rows: list[dict]) -> list[str]:
    findings = []
    for model in _models(rows):
        of_model = _of_model(rows, model)
        means = drift_layer_means(of_model)
        seeds_by_task = {str(task): _seed_count(task_rows)
                         for (task,), task_rows in _group(of_model, "task").items()}
        for task, points in means.items():
            js = [p for p in points if p["js_mean"] is not None]
            if len(js) < 2:
                continue
            third = max(1, len(js) // 3)
            low, high = js[:third], js[-third:]
            low_js = _mean(p["js_mean"] for p in low)
            high_js = _mean(p["js_mean"] for p in high)
            least = min(js, key=lambda p: p["js_mean"])
            most = max(js, key=lambda p: p["js_mean"])
            where = "lowest" if low_js < high_js else "highest"
            text = (f"{model}, {task}: attention changes least in the {where} layers — "
                    f"mean JS divergence {_fmt_sig(low_js)} over "
                    f"{_layer_span([p['layer'] for p in low])} vs {_fmt_sig(high_js)} over "
                    f"{_layer_span([p['layer'] for p in high])} (mean over "
                    f"{_seeds_text(seeds_by_task.get(task, 0))}); least changed: layer "
                    f"{least['layer']} ({_fmt_sig(least['js_mean'])}), most changed: layer "
                    f"{most['layer']} ({_fmt_sig(most['js_mean'])})")
            l2_low = _mean(p["l2"] for p in points[:third] if p["l2"] is not None)
            l2_high = _mean(p["l2"] for p in points[-third:] if p["l2"] is not None)
            if l2_low is not None and l2_high is not None and len(points) >= 2:
                text += (f"; hidden-state L2 distance {_fmt_sig(l2_low)} in the lowest vs "
                         f"{_fmt_sig(l2_high)} in the highest third")
            findings.append(text + ".")
    return findings


def _correlation_summary(rows: list[dict]) -> dict[tuple, dict]:
    """Per (model, task, importance, normalize): seeds, mean r/ρ and their ranges."""
    summary = {}
    for key, members in _group(rows, "model", "task", "importance", "normalize").items():
        r = [v for v in (_num(row.get("pearson_r")) for row in members) if v is not None]
        rho = [v for v in (_num(row.get("spearman_rho")) for row in members) if v is not None]
        summary[key] = {
            "seeds": _seed_count(members), "r": r, "rho": rho,
            "n": _mean(row.get("n") for row in members),
            "significant": sum(1 for row in members
                               if (_num(row.get("pearson_p")) or 1.0) < 0.05),
            "slope": _mean(row.get("slope") for row in members),
            "intercept": _mean(row.get("intercept") for row in members),
        }
    return summary


def _correlation_findings(rows: list[dict]) -> list[str]:
    summary = _correlation_summary(rows)
    findings = []
    for model in _models(rows):
        of_model = _of_model(rows, model)
        normalize = _pick_normalization(row.get("normalize") for row in of_model)
        largest = []
        for task in _unique(row.get("task") for row in of_model):
            parts, seeds = [], 0
            kinds = _unique((row.get("importance") for row in of_model
                             if row.get("task") == task), IMPORTANCE_KINDS)
            for kind in kinds:
                entry = summary.get((model, task, kind, normalize))
                if not entry or not entry["r"]:
                    continue
                seeds = max(seeds, entry["seeds"])
                r = sum(entry["r"]) / len(entry["r"])
                part = f"{kind} importance: Pearson r = {_fmt(r, 2)}"
                largest.extend(abs(v) for v in entry["r"])
                if entry["rho"]:
                    rho = sum(entry["rho"]) / len(entry["rho"])
                    part += f", Spearman ρ = {_fmt(rho, 2)}"
                    largest.extend(abs(v) for v in entry["rho"])
                parts.append(part)
            if parts:
                findings.append(f"{model}, {task}: correlation of head importance ({normalize}) "
                                f"with JS divergence, mean over {_seeds_text(seeds)} — "
                                + "; ".join(parts) + ".")
        if largest:
            peak = max(largest)
            verdict = "within" if peak <= PAPER_MAX_ABS_R + 1e-12 else "above"
            findings.append(f"{model}: the largest |r| or |ρ| between head importance and JS "
                            f"divergence over all tasks and seeds is {peak:.2f}, {verdict} the "
                            f"paper's |r| ≤ {PAPER_MAX_ABS_R:.2f}.")
    return findings


def _freezing_findings(rows: list[dict]) -> list[str]:
    findings = []
    for (model, frozen), members in _group(rows, "model", "freeze_layers").items():
        parts = []
        for (task,), task_rows in _group(members, "task").items():
            mean, _, count = _stats(row.get("relative") for row in task_rows)
            if mean is not None:
                parts.append(f"{mean:.2f} on {task} ({_text(task_rows[0].get('metric'))})")
        if parts:
            findings.append(
                f"{model} fine-tuned with {_text(frozen)} frozen "
                f"layer{'' if _num(frozen) == 1 else 's'} keeps, relative to full "
                f"fine-tuning, " + ", ".join(parts) + " (mean over "
                f"{_seeds_text(_seed_count(members))}; the paper, RoBERTa-large with 5 frozen "
                f"layers: 0.91 on CoLA, > 0.98 on SST-2, QQP and MNLI).")
    return findings


def _stage_order(rows: Iterable[dict]) -> list:
    return _unique((row.get("stage") for row in rows), STAGES)


def _pruned_finetune_findings(rows: list[dict]) -> list[str]:
    findings = []
    for (model, task, ratio), members in _group(rows, "model", "task", "ratio").items():
        parts = []
        for stage in _stage_order(members):
            mean, _, _ = _stats(row.get("relative") for row in members
                                if row.get("stage") == stage)
            if mean is not None:
                parts.append(f"{stage} {mean:.2f}")
        if parts:
            pruned = "" if _num(ratio) is None else f", {_pct(_num(ratio))} of heads pruned"
            findings.append(f"{model}, {task}{pruned}: relative {_text(members[0].get('metric'))} "
                            + ", ".join(parts) + f" (mean over "
                            f"{_seeds_text(_seed_count(members))}).")
    return findings

