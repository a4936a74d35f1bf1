"""Report stage of the study runner: figures, headline findings, report.md and report.html.

`write_report(run_dir, tables, meta)` turns the study's tidy tables (lists of dicts, one per
analysis; any may be missing or empty) into

- figures under RUN_DIR/figures/, each as PNG (150 dpi) and SVG: the pruning curves on the
  downstream tasks (Figure 1 of the reference study) and on the masked LM (Figure 2), the
  recall of important heads (Figure 3), attention and feature drift per layer (Figure 4),
  head importance against JS divergence (Figure 6), fine-tuning with frozen layers, and
  fine-tuning of pruned models;
- headline findings: sentences whose numbers are computed from the tables
  (`headline_findings`), never typed in;
- RUN_DIR/report.md and RUN_DIR/report.html (self-contained: inline CSS, figures by
  relative path), each with one section per figure, the aggregated numbers behind it and a
  link to the full table under RUN_DIR/tables/, then the configuration, the environment and
  the run's notes. A section whose table is missing or empty is left out.

Means and standard deviations are over seeds (population standard deviation, as in
`headcount.recall`). Relative performance thresholds follow the study: 90% of the unpruned
downstream performance (Figure 1), 75% of the masked-LM performance (the paper's guideline,
Figure 3) and recall 90%.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from headcount.io import write_atomic
from headcount.plotting import (
    drift_layer_means,
    mpl_text,
    plot_curves,
    plot_drift_layers,
    plot_grouped_bars,
    plot_importance_js,
    plot_recall,
    save_figure_formats,
)

FIGURE_DIR = "figures"
TABLE_DIR = "tables"
RETAIN = 0.9  # downstream: share of the unpruned performance still "kept" (Figure 1)
MLM_RETAIN = 0.75  # masked LM: the paper's guideline (section 4)
RECALL_TARGET = 0.9  # recall of downstream-important heads (Figure 3)
PAPER_MAX_ABS_R = 0.10  # the paper: |r| <= 0.10 between importance and JS divergence
NORMALIZATION_ORDER = ("l1", "l2", "none")
STAGES = ("unpruned", "pruned-before", "pruned-after")
STAGE_COLOURS = {"unpruned": "tab:gray", "pruned-before": "tab:orange",
                 "pruned-after": "tab:blue"}
IMPORTANCE_KINDS = ("pretrain", "downstream")
TASK_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
MISSING = "–"
_RC = {
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12,
    "svg.hashsalt": "headcount", "svg.fonttype": "path",
}


# --------------------------------------------------------------------------------------
# Small helpers on table values


def _num(value) -> float | None:
    """A finite float, or None (None, NaN, inf, bool, text that is not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _truthy(value) -> bool:
    return value is True or (isinstance(value, int | float) and value == 1) or (
        isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def _is_main(row: dict) -> bool:
    """Rows of the main metric; a table without a `main` column has only main rows."""
    return row.get("main") is None or _truthy(row.get("main"))


def _text(value) -> str:
    return MISSING if value is None else str(value)


def _unique(values: Iterable, first: Iterable = ()) -> list:
    """Distinct values in order of first appearance, the ones in `first` first (in its
    order, when present)."""
    seen = list(dict.fromkeys(values))
    preferred = [value for value in first if value in seen]
    return preferred + [value for value in seen if value not in preferred]


def _group(rows: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in keys), []).append(row)
    return groups


def _stats(values: Iterable) -> tuple[float | None, float | None, int]:
    """Mean, population standard deviation and count of the finite values."""
    finite = [v for v in (_num(value) for value in values) if v is not None]
    if not finite:
        return None, None, 0
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)), len(finite)


def _mean(values: Iterable) -> float | None:
    return _stats(values)[0]


def _seed_count(rows: Iterable[dict]) -> int:
    return len({str(row.get("seed")) for row in rows})


def _seeds_text(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return _text(value)
    if isinstance(value, int):
        return str(value)
    number = _num(value)
    if number is None:
        return MISSING if isinstance(value, float) else str(value)
    text = f"{number:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.00"


def _fmt_sig(value, digits: int = 3) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:.{digits}g}"


def _fmt_ms(mean, std, count: int = 2, digits: int = 3) -> str:
    if mean is None:
        return MISSING
    if std is None or count < 2:
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} ± {_fmt(std, digits)}"


def _pct(ratio: float) -> str:
    """0.6 -> '60%'; 0.125 -> '12.5%'."""
    value = 100 * ratio
    if abs(value - round(value)) < 0.05:
        return f"{round(value)}%"
    return f"{value:.1f}%"


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return MISSING
    return f"{ratio:.2f}" if abs(100 * ratio - round(100 * ratio)) < 1e-6 else f"{ratio:.3f}"


def _layer_sort_key(layer):
    number = _num(layer)
    return (number is None, number if number is not None else 0.0, str(layer))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "model"


def _rows(tables: dict, name: str) -> list[dict]:
    rows = (tables or {}).get(name)
    return [row for row in rows if isinstance(row, dict)] if rows else []


def _models(rows: Iterable[dict]) -> list:
    return _unique(row.get("model") for row in rows)


def _of_model(rows: Iterable[dict], model) -> list[dict]:
    return [row for row in rows if row.get("model") == model]


def _pick_normalization(values: Iterable) -> str | None:
    """'l1' when present (the paper's choice), else the first."""
    ordered = _unique(values, NORMALIZATION_ORDER)
    return ordered[0] if ordered else None


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
    from headcount.report_companion import FINDINGS

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


# --------------------------------------------------------------------------------------
# Figures (built from the tables; each returns a matplotlib Figure, or None for no data)


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _panel_grid(figure, count: int, *, max_columns: int = 4, **kwargs):
    columns = min(max_columns, max(count, 1))
    rows = math.ceil(count / columns)
    axes = figure.subplots(rows, columns, squeeze=False, **kwargs)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return flat[:count], columns


def figure_curves(rows: list[dict], model, curve: str = "downstream"):
    """Figure 1 (`curve="downstream"`: one panel per task) or Figure 2 (`"pretrain"`, the
    masked LM): relative main-metric performance against the ratio of heads pruned, one
    dotted line per seed, one colour per normalisation; None when there is nothing."""
    from matplotlib.lines import Line2D

    usable = [row for row in _usable_curve_rows(_of_model(rows, model))
              if _curve_kind(row) == curve and _num(row.get("ratio_pruned")) is not None]
    if not usable:
        return None
    tasks = _unique(row.get("task") for row in usable)
    width = 3.5 if len(tasks) > 2 else 4.0 if len(tasks) == 2 else 6.0
    figure = _new_figure(width * min(4, len(tasks)) + 0.3,
                         3.5 * math.ceil(len(tasks) / 4) + 1.2)
    axes, columns = _panel_grid(figure, len(tasks), sharey=True)
    handles: dict[str, object] = {}
    values = [float(row["relative"]) for row in usable]
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        task_rows = [{**row, "main": True, "rank_task": _text(row.get("rank_task")),
                      "schedule": _text(row.get("schedule")),
                      "normalize": _text(row.get("normalize")), "seed": _text(row.get("seed")),
                      "task": mpl_text(task), "metric": _text(row.get("metric"))}
                     for row in usable if row.get("task") == task]
        metric = _text(task_rows[0].get("metric"))
        seeds = _seed_count(task_rows)
        name = "masked LM" if curve == "pretrain" and task == "mlm" else mpl_text(task)
        plot_curves(task_rows, ax, title=f"{name} ({mpl_text(metric)}), {_seeds_text(seeds)}")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        if curve == "pretrain":
            ax.axhline(MLM_RETAIN, color="tab:red", linewidth=0.9, linestyle="-.")
        ylabel = "relative performance" if len(tasks) > 1 else f"relative {mpl_text(metric)}"
        ax.set_ylabel(ylabel if index % columns == 0 else "")
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    low = max(min(values) - 0.05, -0.5)
    high = min(max(max(values), 1.0) + 0.05, 1.6)
    axes[0].set_ylim(low, high)
    extra = [Line2D([], [], color="black", linestyle=":", marker=".", label="one line per seed"),
             Line2D([], [], color="gray", linestyle="--", linewidth=0.8,
                    label=f"{_pct(RETAIN)} of the unpruned model")]
    if curve == "pretrain":
        extra.append(Line2D([], [], color="tab:red", linestyle="-.", linewidth=0.9,
                            label=f"{_pct(MLM_RETAIN)} (the paper's guideline)"))
    legend = list(handles.values()) + extra
    figure.legend(handles=legend, loc="outside lower center",
                  ncols=min(len(legend), 2 + min(len(tasks), 3)), frameon=False)
    what = ("downstream performance of the pruned fine-tuned model (Figure 1)"
            if curve == "downstream" else "masked-LM performance of the pruned model (Figure 2)")
    figure.suptitle(f"{mpl_text(model)}: relative {what}")
    return figure


def figure_recall(rows: list[dict], model):
    """Figure 3: recall (Eq. 5) against the relative masked-LM performance x, one line per
    task (normalisation l1 when present, else the first), ± std shaded; None when empty."""
    from matplotlib.lines import Line2D

    of_model = _of_model(rows, model)
    normalize = _pick_normalization(row.get("normalize") for row in of_model)
    curves: dict[str, list[dict]] = {}
    for (task,), task_rows in _group([r for r in of_model if r.get("normalize") == normalize],
                                     "task").items():
        points = [{"x": x, "recall_mean": mean, "threshold": row.get("threshold") or RETAIN,
                   "recall_std": std or 0.0}
                  for x, mean, std, row in _recall_points(task_rows) if mean is not None]
        if points:
            curves[mpl_text(task)] = points
    if not curves:
        return None
    figure = _new_figure(6.4, 5.0)
    ax = figure.subplots()
    plot_recall(curves, ax)
    ax.axhline(RECALL_TARGET, color="gray", linewidth=0.8, linestyle="--")
    ax.axvline(MLM_RETAIN, color="tab:red", linewidth=0.9, linestyle="-.")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="gray", linestyle="--", linewidth=0.8,
                       label=f"recall {_pct(RECALL_TARGET)}"),
                Line2D([], [], color="tab:red", linestyle="-.", linewidth=0.9,
                       label=f"x = {_pct(MLM_RETAIN)} (the paper's guideline)")]
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    seeds = max((int(v) for v in (_num(r.get("n")) for r in of_model) if v is not None),
                default=0)
    ax.set_title(f"{mpl_text(model)}: recall of downstream-important heads (Eq. 5; "
                 f"{mpl_text(normalize)}),\nmean ± std over {_seeds_text(seeds)} (Figure 3)")
    return figure


def figure_drift(rows: list[dict], model):
    """Figure 4: per-layer JS divergence (mean solid, max dashed) and L2 distance, one colour
    per task, each the mean of the per-seed values; None when empty."""
    of_model = [{**row, "task": _text(row.get("task"))} for row in _of_model(rows, model)]
    if not of_model:
        return None
    figure = _new_figure(7.6, 7.0)
    axes = figure.subplots(2, 1, sharex=True)
    plot_drift_layers(of_model, axes, title=f"{mpl_text(model)}: pre-trained vs fine-tuned "
                      "model per layer, mean over seeds (Figure 4)")
    return figure


def _importance_column(rows: list[dict]) -> str | None:
    for column in (*NORMALIZATION_ORDER, "raw"):
        if any(_num(row.get(column)) is not None for row in rows):
            return column
    return None


def correlation_points(importance: list[dict], drift_heads: list[dict], model, task,
                       kind: str, column: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per seed of the drift table: (importance, JS) of each head present in both tables.
    Pre-train importance is the masked-LM one ("mlm"); with no importance rows for that seed,
    the mean over the seeds that have them. Importance with one layer but JS with several
    (ALBERT's shared heads): the JS of a head is its mean over the layer applications."""
    source = "mlm" if kind == "pretrain" else task
    scores = [row for row in importance
              if row.get("model") == model and row.get("task") == source]
    drift = [row for row in drift_heads if row.get("model") == model and row.get("task") == task]
    if not scores or not drift:
        return {}
    shared = (len({str(r.get("layer")) for r in scores}) == 1
              and len({str(r.get("layer")) for r in drift}) > 1)

    def key(row):
        return str(row.get("head")) if shared else (str(row.get("layer")), str(row.get("head")))

    points = {}
    for (seed,), seed_drift in _group(drift, "seed").items():
        seed_scores = [r for r in scores if str(r.get("seed")) == str(seed)] or scores
        values: dict = {}
        for row in seed_scores:
            values.setdefault(key(row), []).append(row.get(column))
        js: dict = {}
        for row in seed_drift:
            js.setdefault(key(row), []).append(row.get("js"))
        xs, ys = [], []
        for head, head_scores in values.items():
            x, y = _mean(head_scores), _mean(js.get(head, []))
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        if xs:
            points[_text(seed)] = (xs, ys)
    return points


def figure_correlation(importance: list[dict], drift_heads: list[dict],
                       correlation: list[dict], model):
    """Figure 6: each head's JS divergence against its importance (l1 when present), one
    column per task, a row each for pre-train and downstream importance; markers and dotted
    least-squares lines per seed, r and ρ from the correlation table where it has them.
    None without importance or per-head drift rows."""
    column = _importance_column(_of_model(importance, model))
    tasks = _unique(row.get("task") for row in _of_model(drift_heads, model))
    if column is None or not tasks:
        return None
    panels = []
    for kind in IMPORTANCE_KINDS:
        for task in tasks:
            points = correlation_points(importance, drift_heads, model, task, kind, column)
            if points:
                panels.append((kind, task, points))
    if not panels:
        return None
    from matplotlib.lines import Line2D

    from headcount.plotting import _SEED_MARKERS

    kinds = _unique(kind for kind, _, _ in panels)
    figure = _new_figure(3.9 * len(tasks) + 0.3, 3.5 * len(kinds) + 0.9)
    grid = figure.subplots(len(kinds), len(tasks), squeeze=False)
    drawn = set()
    seeds: list[str] = []
    for kind, task, points in panels:
        row_index, column_index = kinds.index(kind), tasks.index(task)
        ax = grid[row_index][column_index]
        drawn.add((row_index, column_index))
        seeds.extend(seed for seed in points if seed not in seeds)
        fits = {}
        for row in correlation:
            if (row.get("model") == model and row.get("task") == task
                    and row.get("importance") == kind and row.get("normalize") == column):
                fits[_text(row.get("seed"))] = {
                    name: _num(row.get(name))
                    for name in ("slope", "intercept", "pearson_r", "spearman_rho")}
        r, rho = _panel_correlation(points, fits)
        source = "masked-LM" if kind == "pretrain" else mpl_text(task)
        title = f"{mpl_text(task)}: {kind} importance"
        if r is not None:
            title += f"\nmean r = {_fmt(r, 2)}" + (
                "" if rho is None else f", ρ = {_fmt(rho, 2)}")
        plot_importance_js(points, fits, ax, legend=False,
                           colour=TASK_COLOURS[column_index % len(TASK_COLOURS)],
                           title=title, xlabel=f"{source} head importance ({column})")
        ax.set_ylabel("JS divergence" if column_index == 0 else "")
        ax.set_ylim(bottom=0)
    for row_index, row in enumerate(grid):
        for column_index, ax in enumerate(row):
            if (row_index, column_index) not in drawn:
                ax.set_visible(False)
    handles = [Line2D([], [], color="dimgray", marker=_SEED_MARKERS[i % len(_SEED_MARKERS)],
                      linestyle="", label=f"seed {mpl_text(seed)}")
               for i, seed in enumerate(seeds)]
    handles.append(Line2D([], [], color="dimgray", linestyle=":", linewidth=2.2,
                          label="least squares (JS on importance), per seed"))
    figure.legend(handles=handles, loc="outside lower center", frameon=False,
                  ncols=min(len(handles), 6))
    figure.suptitle(f"{mpl_text(model)}: head importance vs JS divergence between the "
                    "pre-trained and the fine-tuned model (Figure 6)")
    return figure


def _panel_correlation(points: dict, fits: dict) -> tuple[float | None, float | None]:
    """Mean over seeds of Pearson's r and Spearman's ρ: from the correlation table where it
    has them, else computed from the points."""
    from scipy import stats

    r_values, rho_values = [], []
    for seed, (xs, ys) in points.items():
        fit = fits.get(seed) or {}
        r, rho = fit.get("pearson_r"), fit.get("spearman_rho")
        if (r is None or rho is None) and len(xs) >= 3 and len(set(xs)) > 1 \
                and len(set(ys)) > 1:
            r = float(stats.pearsonr(xs, ys)[0]) if r is None else r
            rho = float(stats.spearmanr(xs, ys)[0]) if rho is None else rho
        if _num(r) is not None:
            r_values.append(r)
        if _num(rho) is not None:
            rho_values.append(rho)
    return _mean(r_values), _mean(rho_values)


def figure_freezing(rows: list[dict], model):
    """Relative performance with K frozen layers per task (mean ± std over seeds)."""
    of_model = [row for row in _of_model(rows, model) if _num(row.get("relative")) is not None]
    if not of_model:
        return None
    tasks = _unique(row.get("task") for row in of_model)
    frozen = sorted(_unique(row.get("freeze_layers") for row in of_model), key=_layer_sort_key)
    series = {}
    for k in frozen:
        values = []
        for task in tasks:
            mean, std, count = _stats(row.get("relative") for row in of_model
                                      if row.get("task") == task
                                      and row.get("freeze_layers") == k)
            values.append(None if mean is None else (mean, std if count > 1 else 0.0))
        series[f"{_text(k)} frozen layer{'s' if _num(k) != 1 else ''}"] = values
    groups = [f"{task}\n({_text(next(r.get('metric') for r in of_model if r.get('task') == task))})"
              for task in tasks]
    figure = _new_figure(max(5.5, 1.5 * len(tasks) * max(1, len(frozen) / 2) + 2.0), 4.6)
    ax = figure.subplots()
    plot_grouped_bars(groups, series, ax, ylabel="relative to full fine-tuning",
                      title=f"{mpl_text(model)}: fine-tuning with frozen layers, mean ± std "
                      f"over {_seeds_text(_seed_count(of_model))}")
    return figure


def figure_pruned_finetune(rows: list[dict], model):
    """Grouped bars per task (and ratio): unpruned, pruned-before and pruned-after, relative
    performance, mean ± std over seeds."""
    of_model = [row for row in _of_model(rows, model) if _num(row.get("relative")) is not None]
    if not of_model:
        return None
    keys = list(_group(of_model, "task", "ratio"))
    stages = _stage_order(of_model)
    series = {}
    for stage in stages:
        values = []
        for task, ratio in keys:
            mean, std, count = _stats(row.get("relative") for row in of_model
                                      if row.get("task") == task and row.get("ratio") == ratio
                                      and row.get("stage") == stage)
            values.append(None if mean is None else (mean, std if count > 1 else 0.0))
        series[_text(stage)] = values
    groups = [_text(task) + ("" if _num(ratio) is None else f"\n{_pct(_num(ratio))} pruned")
              for task, ratio in keys]
    figure = _new_figure(max(5.5, 1.4 * len(keys) * max(1, len(stages) / 2.5) + 2.0), 4.6)
    ax = figure.subplots()
    plot_grouped_bars(groups, series, ax, ylabel="relative performance (main metric)",
                      colours=STAGE_COLOURS,
                      title=f"{mpl_text(model)}: fine-tuning and pruning, mean ± std over "
                      f"{_seeds_text(_seed_count(of_model))}")
    return figure


# --------------------------------------------------------------------------------------
# The document: sections of blocks (figure + tables), rendered as Markdown and HTML


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Block:
    title: str
    figure: str | None = None  # path of the figure without suffix, relative to the run dir
    caption: str = ""
    tables: list[Table] = field(default_factory=list)


@dataclass
class Section:
    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    code: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)


class _Figures:
    """Saves figures under RUN_DIR/figures as PNG + SVG, with distinct names."""

    def __init__(self, run_dir: Path, problems: list[str]):
        self.run_dir = run_dir
        self.directory = run_dir / FIGURE_DIR
        self.problems = problems
        self.saved: list[Path] = []
        self.names: set[str] = set()

    def save(self, name: str, build: Callable[[], object]) -> str | None:
        """Build and save a figure; its path without suffix relative to the run dir, or None
        (no data, or the figure failed: noted in the report)."""
        import matplotlib

        try:
            with matplotlib.rc_context(_RC):
                figure = build()
                if figure is None:
                    return None
                name = _slug(name)
                base, count = name, 2
                while name in self.names:
                    name, count = f"{base}-{count}", count + 1
                self.names.add(name)
                self.directory.mkdir(parents=True, exist_ok=True)
                self.saved.extend(save_figure_formats(figure, self.directory / name))
        except Exception as error:  # one bad figure must not cost the whole report
            self.problems.append(f"figure {name} left out: {type(error).__name__}: {error}")
            return None
        return f"{FIGURE_DIR}/{name}"


def _table_links(run_dir: Path, name: str) -> list[tuple[str, str]]:
    return [(f"{TABLE_DIR}/{name}{suffix}", f"{TABLE_DIR}/{name}{suffix}")
            for suffix in (".csv", ".parquet")
            if (run_dir / TABLE_DIR / f"{name}{suffix}").is_file()]


def _wide_ratio_table(groups: list[CurveGroup], *, with_task: bool) -> Table:
    keys = sorted({point.key for group in groups for point in group.points})
    columns = ["ratio"] + [(f"{group.task} " if with_task else "") + group.label
                           for group in groups]
    rows = []
    for key in keys:
        row = [_fmt_ratio(key)]
        for group in groups:
            point = next((p for p in group.points if abs(p.key - key) < 1e-9), None)
            row.append(MISSING if point is None else _fmt(point.mean))
        rows.append(row)
    metrics = ", ".join(_unique(group.metric for group in groups))
    return Table(columns, rows, f"Mean relative {metrics} over seeds at each ratio of heads "
                 "pruned (requested ratio).")


def _retained_pivot(groups: list[CurveGroup]) -> Table:
    """Per task: the largest ratio pruned up to which each variant keeps >= RETAIN."""
    labels = _unique(group.label for group in groups)
    table = Table(["task", "metric", "seeds"] + labels, [],
                  f"Largest ratio of heads pruned up to which the mean relative performance "
                  f"over seeds stays ≥ {_pct(RETAIN)}, per normalisation ({MISSING}: below "
                  "already at the first ratio).")
    for task in _unique(group.task for group in groups):
        of_task = [group for group in groups if group.task == task]
        row = [_text(task), of_task[0].metric, str(max(g.seeds for g in of_task))]
        for label in labels:
            group = next((g for g in of_task if g.label == label), None)
            kept = None if group is None else group.retained(RETAIN)[0]
            row.append(MISSING if kept is None else _pct(kept))
        table.rows.append(row)
    return table


def _curves_section(tables: dict, run_dir: Path, figures: _Figures, curve: str) -> Section | None:
    rows = [row for row in _rows(tables, "curves") if _curve_kind(row) == curve]
    groups = [g for g in curve_groups(rows) if g.curve == curve]
    if not groups:
        return None
    if curve == "downstream":
        section = Section("curves-downstream", "Pruning: downstream tasks (Figure 1)", [
            "Relative performance (main metric, relative to the unpruned fine-tuned model) "
            "against the ratio of attention heads pruned, least important first. One dotted "
            "line per seed, one colour per normalisation of the importance scores; the grey "
            f"dashed line marks {_pct(RETAIN)}."])
    else:
        section = Section("curves-pretrain", "Pruning: masked language model (Figure 2)", [
            "Relative masked-LM performance against the ratio of heads pruned, least "
            "important (for the masked LM) first; one dotted line per seed. The dash-dotted "
            f"line marks {_pct(MLM_RETAIN)}, the paper's guideline."])
    for model in _unique(g.model for g in groups):
        of_model = [g for g in groups if g.model == model]
        stem = figures.save(f"curves-{curve}-{model}",
                            lambda m=model: figure_curves(rows, m, curve))
        if curve == "downstream":
            summary = _retained_pivot(of_model)
        else:
            summary = Table(["normalisation", "metric", "seeds", f"≥ {_pct(RETAIN)} up to",
                             f"≥ {_pct(MLM_RETAIN)} up to", f"< {_pct(MLM_RETAIN)} from"], [],
                            "Largest ratio of heads pruned up to which the mean relative "
                            "performance over seeds stays above the threshold, and the first "
                            "ratio below it.")
            for group in of_model:
                kept, _ = group.retained(RETAIN)
                kept75, below75 = group.retained(MLM_RETAIN)
                summary.rows.append([
                    group.label + ("" if group.task in ("mlm", None) else f" ({group.task})"),
                    group.metric, str(group.seeds), MISSING if kept is None else _pct(kept),
                    MISSING if kept75 is None else _pct(kept75),
                    "never" if below75 is None else _pct(below75)])
        ratios = _wide_ratio_table(of_model, with_task=len({g.task for g in of_model}) > 1)
        what = "downstream" if curve == "downstream" else "masked-LM"
        section.blocks.append(Block(
            _text(model), stem, f"{model}: relative {what} performance vs ratio of heads "
            "pruned.",
            [summary, ratios]))
    section.links = _table_links(run_dir, "curves")
    return section


def _recall_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "recall")
    if not rows:
        return None
    section = Section("recall", "Recall of downstream-important heads (Figure 3)", [
        "Recall (Eq. 5): the share of the heads needed for the downstream threshold "
        "performance that are still kept when the model is pruned, by masked-LM importance, "
        "as far as it keeps a share x of its masked-LM performance. Mean over seeds, "
        "± one standard deviation shaded."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        normalize = _pick_normalization(row.get("normalize") for row in of_model)
        stem = figures.save(f"recall-{model}", lambda m=model: figure_recall(rows, m))
        has_guideline = any(abs(x - MLM_RETAIN) < 1e-9 for x, *_ in _recall_points(of_model))
        normalizations = _unique((r.get("normalize") for r in of_model), NORMALIZATION_ORDER)
        summary = Table(["task", "threshold", "seeds"]
                        + [_text(n) for n in normalizations]
                        + ([f"recall at {_fmt_ratio(MLM_RETAIN)} ({normalize})"]
                           if has_guideline else []), [],
                        f"Smallest x at which the mean recall reaches {_pct(RECALL_TARGET)}, per "
                        "normalisation" + (f"; the mean recall at x = {_fmt_ratio(MLM_RETAIN)}."
                                           if has_guideline else "."))
        for (task,), members in _group(of_model, "task").items():
            seeds = max((int(v) for v in (_num(r.get("n")) for r in members) if v is not None),
                        default=0)
            row = [_text(task), _fmt(_num(members[0].get("threshold")), 2), str(seeds)]
            for norm in normalizations:
                of_norm = [r for r in members if r.get("normalize") == norm]
                reached = _recall_reached(of_norm)
                row.append(MISSING if not of_norm else "never" if reached is None
                           else _fmt_ratio(reached))
            if has_guideline:
                row.append(_fmt(next((mean for x, mean, _, _ in _recall_points(
                    [r for r in members if r.get("normalize") == normalize])
                    if abs(x - MLM_RETAIN) < 1e-9), None)))
            summary.rows.append(row)
        chosen = _group([r for r in of_model if r.get("normalize") == normalize], "task")
        xs = sorted({x for members in chosen.values() for x, *_ in _recall_points(members)})
        values = {task: {x: (mean, std) for x, mean, std, _ in _recall_points(members)}
                  for (task,), members in chosen.items()}
        table = Table(["x"] + [_text(task) for task in values], [
            [_fmt_ratio(x)] + [_fmt_ms(*values[task].get(x, (None, None)), count=2)
                               for task in values] for x in xs],
            f"Mean recall ± std over seeds ({normalize}).")
        section.blocks.append(Block(_text(model), stem, f"{model}: recall vs x ({normalize}).",
                                    [summary, table]))
    section.links = _table_links(run_dir, "recall")
    return section


def _drift_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "drift_layers")
    if not rows:
        return None
    section = Section("drift", "Attention and feature drift per layer (Figure 4)", [
        "Jensen–Shannon divergence between the attention of the pre-trained and the "
        "fine-tuned model on the same downstream inputs, per layer: mean over heads (solid) "
        "and max over heads (dashed); below, the L2 distance between their hidden states. "
        "Each value is the mean of the per-seed values."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"drift-{model}", lambda m=model: figure_drift(rows, m))
        means = drift_layer_means(of_model)
        layers = sorted(_unique(p["layer"] for points in means.values() for p in points),
                        key=_layer_sort_key)
        columns = ["layer"]
        for task in means:
            columns += [f"{task} JS mean", f"{task} JS max", f"{task} L2"]
        body = []
        for layer in layers:
            row = [_text(layer)]
            for points in means.values():
                point = next((p for p in points if p["layer"] == layer), None)
                row += [MISSING if point is None else _fmt_sig(point[name])
                        for name in ("js_mean", "js_max", "l2")]
            body.append(row)
        section.blocks.append(Block(_text(model), stem, f"{model}: drift per layer.", [
            Table(columns, body, "Mean over seeds of the per-seed JS divergence (mean and max "
                  "over the heads of the layer) and L2 distance.")]))
    section.links = _table_links(run_dir, "drift_layers") + _table_links(run_dir, "drift_heads")
    return section


def _correlation_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "correlation")
    importance, drift_heads = _rows(tables, "importance"), _rows(tables, "drift_heads")
    if not rows and not (importance and drift_heads):
        return None
    section = Section("correlation", "Head importance vs attention drift (Figure 6)", [
        "Each point is a head: its importance (pre-train: masked LM; downstream: the "
        "fine-tuning task) and the JS divergence of its attention between the pre-trained and "
        "the fine-tuned model, with the least-squares line of JS on importance per seed. The "
        f"paper found |r| ≤ {PAPER_MAX_ABS_R:.2f} for all tasks."])
    summary = _correlation_summary(rows)
    for model in _unique([*_models(rows), *_models(drift_heads)]):
        stem = figures.save(f"correlation-{model}", lambda m=model: figure_correlation(
            importance, drift_heads, rows, m))
        body = []
        for (m, task, kind, normalize), entry in summary.items():
            if m != model:
                continue
            body.append([
                _text(task), _text(kind), _text(normalize), str(entry["seeds"]),
                _fmt(entry["n"], 0),
                _fmt_ms(*_stats(entry["r"])[:2], count=len(entry["r"]), digits=3),
                _fmt_ms(*_stats(entry["rho"])[:2], count=len(entry["rho"]), digits=3),
                f"{entry['significant']}/{entry['seeds']}", _fmt_sig(entry["slope"])])
        block_tables = [Table(["task", "importance", "normalisation", "seeds", "heads",
                               "Pearson r", "Spearman ρ", "seeds with p < 0.05 (r)",
                               "slope"], body, "Mean ± std over seeds.")] if body else []
        if stem or block_tables:
            section.blocks.append(Block(_text(model), stem,
                                        f"{model}: head importance vs JS divergence.",
                                        block_tables))
    if not section.blocks:
        return None
    section.links = _table_links(run_dir, "correlation") + _table_links(run_dir, "importance")
    return section


def _freezing_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "freezing")
    if not rows:
        return None
    section = Section("freezing", "Fine-tuning with frozen layers", [
        "Fine-tuning with the parameters of K layers frozen, relative to fine-tuning the whole "
        "model (same task and seed); mean ± std over seeds. The paper froze 5 layers of "
        "RoBERTa-large: 0.91 on CoLA, more than 0.98 on SST-2, QQP and MNLI."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"freezing-{model}", lambda m=model: figure_freezing(rows, m))
        body = []
        for (task, k), members in _group(of_model, "task", "freeze_layers").items():
            count = _seed_count(members)
            body.append([_text(task), _text(k), _text(members[0].get("metric")), str(count),
                         _fmt_ms(*_stats(r.get("value") for r in members)[:2], count=count),
                         _fmt_ms(*_stats(r.get("full_value") for r in members)[:2],
                                 count=count),
                         _fmt_ms(*_stats(r.get("relative") for r in members)[:2],
                                 count=count)])
        section.blocks.append(Block(_text(model), stem, f"{model}: fine-tuning with frozen "
                                    "layers.", [Table(["task", "frozen layers", "metric",
                                                       "seeds", "value", "full fine-tuning",
                                                       "relative"], body,
                                                      "Mean ± std over seeds.")]))
    section.links = _table_links(run_dir, "freezing")
    return section


def _pruned_finetune_section(tables: dict, run_dir: Path,
                             figures: _Figures) -> Section | None:
    rows = _rows(tables, "pruned_finetune")
    if not rows:
        return None
    section = Section("pruned-finetune", "Fine-tuning and pruning", [
        "Relative performance (main metric) of the unpruned model and of the pruned models of "
        "the study's stages 'pruned-before' and 'pruned-after' (pruning before or after "
        "fine-tuning), mean ± std over seeds."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"pruned-finetune-{model}",
                            lambda m=model: figure_pruned_finetune(rows, m))
        stages = _stage_order(of_model)
        body = []
        for (task, ratio), members in _group(of_model, "task", "ratio").items():
            row = [_text(task), MISSING if _num(ratio) is None else _pct(_num(ratio)),
                   _text(members[0].get("metric")), str(_seed_count(members))]
            for stage in stages:
                of_stage = [r for r in members if r.get("stage") == stage]
                row.append(_fmt_ms(*_stats(r.get("relative") for r in of_stage)[:2],
                                   count=len(of_stage)))
            body.append(row)
        section.blocks.append(Block(_text(model), stem, f"{model}: pruned fine-tuning.", [
            Table(["task", "heads pruned", "metric", "seeds"] + [_text(s) for s in stages],
                  body, "Relative performance, mean ± std over seeds.")]))
    section.links = _table_links(run_dir, "pruned_finetune")
    return section


def _finetune_section(tables: dict, run_dir: Path) -> Section | None:
    rows = [row for row in _rows(tables, "finetune") if _is_main(row)]
    if not rows:
        return None
    body = []
    for (model, task, kind, frozen), members in _group(rows, "model", "task", "kind",
                                                       "freeze_layers").items():
        count = _seed_count(members)
        body.append([_text(model), _text(task), _text(kind),
                     MISSING if frozen in (None, 0) else _text(frozen),
                     _text(members[0].get("metric")), str(count),
                     _fmt_ms(*_stats(r.get("value") for r in members)[:2], count=count),
                     _fmt(_mean(r.get("steps") for r in members), 0),
                     _fmt(_mean(r.get("seconds") for r in members), 1),
                     _fmt(_mean(r.get("examples_per_second") for r in members), 1)])
    return Section("finetune", "Fine-tuned models", [
        "Main metric of every fine-tuning run, mean ± std over seeds; steps, seconds and "
        "throughput are means over seeds."], tables=[Table(
            ["model", "task", "kind", "frozen layers", "metric", "seeds", "value", "steps",
             "seconds", "examples/s"], body)], links=_table_links(run_dir, "finetune"))


def _config_section(meta: dict) -> Section | None:
    text = meta.get("config_text")
    if not text:
        return None
    return Section("configuration", "Configuration", ["The configuration as run (TOML)."],
                   code=str(text))


def _environment_section(meta: dict) -> Section | None:
    environment = meta.get("environment") or {}
    if not environment:
        return None
    rows = []
    for key in ("device", "python", "platform", "git", "started", "finished"):
        if key in environment:
            rows.append([key, _text(environment.get(key))])
    duration = _duration(environment.get("started"), environment.get("finished"))
    if duration:
        rows.append(["duration", duration])
    for key, value in environment.items():
        if key not in ("device", "python", "platform", "git", "started", "finished",
                       "versions"):
            rows.append([str(key), _text(value)])
    section = Section("environment", "Environment", tables=[Table(["", ""], rows)])
    versions = environment.get("versions") or {}
    if versions:
        section.tables.append(Table(["package", "version"],
                                    [[str(k), _text(v)] for k, v in versions.items()],
                                    "Versions."))
    return section


def _duration(started, finished) -> str | None:
    from datetime import datetime

    try:
        seconds = (datetime.fromisoformat(str(finished))
                   - datetime.fromisoformat(str(started))).total_seconds()
    except (TypeError, ValueError):
        return None
    if seconds < 0:
        return None
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {seconds:02d} s"
    return f"{minutes} min {seconds:02d} s"


def _tables_section(tables: dict, run_dir: Path) -> Section | None:
    body, links = [], []
    for name, rows in (tables or {}).items():
        if not rows:
            continue
        files = _table_links(run_dir, name)
        links.extend(files)
        body.append([str(name), str(len(rows)),
                     ", ".join(href for _, href in files) if files else MISSING])
    if not body:
        return None
    return Section("tables", "Tables", ["Every table of the run, in full."],
                   tables=[Table(["table", "rows", "files"], body)])


# --------------------------------------------------------------------------------------
# Rendering


_MD_SPECIAL = re.compile(r"([\\`*_\[\]])")
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _md(text) -> str:
    """Plain text for Markdown: emphasis, code and link characters escaped; '<' (raw HTML)
    and an '&' that would start an entity written as entities."""
    text = _MD_ENTITY.sub("&amp;", str(text)).replace("<", "&lt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_cell(text) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"*{_md(table.caption)}*", ""]
    columns = table.columns
    lines.append("| " + " | ".join(_md_cell(c) or " " for c in columns) + " |")
    lines.append("|" + "|".join("---:" if _numeric_column(table, i) else "---"
                                for i in range(len(columns))) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    return lines + [""]


_NUMERIC = re.compile(r"^[-+−]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?( ± [\d.eE+-]+)?$")


def _numeric_column(table: Table, index: int) -> bool:
    cells = [row[index] for row in table.rows if index < len(row) and row[index] != MISSING]
    return bool(cells) and all(_NUMERIC.match(cell) for cell in cells)


def _fence(code: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _by_topic(findings: list[tuple[str, str]]) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = {}
    for topic, sentence in findings:
        topics.setdefault(topic, []).append(sentence)
    return topics


def render_markdown(title: str, findings: list[tuple[str, str]], sections: list[Section],
                    problems: list[str]) -> str:
    lines = [f"# {_md(title)}", ""]
    lines += ["## Headline findings", ""]
    if not findings:
        lines += ["No findings: no tables.", ""]
    for topic, sentences in _by_topic(findings).items():
        lines += [f"### {_md(topic)}", ""] + [f"- {_md(s)}" for s in sentences] + [""]
    if problems:
        lines += ["## Report warnings", ""] + [f"- {_md(p)}" for p in problems] + [""]
    for section in sections:
        lines += [f"## {_md(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [_md(paragraph), ""]
        for block in section.blocks:
            lines += [f"### {_md(block.title)}", ""]
            if block.figure:
                lines += [f"![{_md(block.caption)}]({block.figure}.png)", "",
                          f"([SVG]({block.figure}.svg))", ""]
            for table in block.tables:
                lines += _md_table(table)
        for table in section.tables:
            lines += _md_table(table)
        if section.bullets:
            lines += [f"- {_md(bullet)}" for bullet in section.bullets] + [""]
        if section.code is not None:
            fence = _fence(section.code)
            lines += [f"{fence}toml", section.code.rstrip("\n"), fence, ""]
        if section.links:
            lines += ["Full data: " + ", ".join(f"[{_md(label)}]({href})"
                                                for label, href in section.links), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-bottom: 0.25em;
  border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.5em; color: #424a53; }
p { margin: 0.5em 0 0.8em; max-width: 78ch; }
nav.toc { font-size: 0.92em; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 8px 14px; margin: 12px 0 18px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav.toc a { white-space: nowrap; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
ul.findings { padding-left: 1.3em; } ul.findings li { margin: 0.35em 0; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 14px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px 32px; align-items: flex-start; }
.pair figure { flex: 0 1 auto; margin: 0; max-width: 100%; }
.pair .tables { flex: 1 1 auto; min-width: 0; max-width: 100%; display: flex;
  flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.pair .tables .table-wrap { max-width: 100%; }
.pair.side .tables { flex: 1 1 300px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de;
  border-radius: 4px; background: #fff; }
figcaption { font-size: 0.85em; color: #59636e; margin-top: 4px; }
.table-wrap { overflow-x: auto; margin: 0 0 14px; }
table { border-collapse: collapse; font-size: 0.82em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-size: 0.95em; color: #59636e;
  padding: 0 0 4px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; text-align: left; }
td { white-space: nowrap; }
td.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfd; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  overflow-x: auto; font-size: 0.85em; line-height: 1.4; }
.links { font-size: 0.9em; color: #59636e; }
.meta { color: #59636e; font-size: 0.92em; }
"""


def _html_table(table: Table) -> str:
    esc = html.escape
    numeric = [_numeric_column(table, i) for i in range(len(table.columns))]
    parts = ['<div class="table-wrap"><table>']
    if table.caption:
        parts.append(f"<caption>{esc(table.caption)}</caption>")
    if any(table.columns):
        parts.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns)
                     + "</tr></thead>")
    parts.append("<tbody>")
    for row in table.rows:
        parts.append("<tr>" + "".join(
            f'<td class="num">{esc(cell)}</td>' if i < len(numeric) and numeric[i]
            else f"<td>{esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _table_px(table: Table) -> float:
    """A rough width of `table` in CSS pixels (cells do not wrap; headers wrap at spaces)."""
    width = 0.0
    for index, column in enumerate(table.columns):
        longest = max([len(row[index]) for row in table.rows if index < len(row)]
                      + [max((len(word) for word in column.split()), default=0)])
        width += 7.5 * longest + 18
    return width


def render_html(title: str, findings: list[tuple[str, str]], sections: list[Section],
                problems: list[str], subtitle: str = "") -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
           f"<h1>{esc(title)}</h1>"]
    if subtitle:
        out.append(f'<p class="meta">{esc(subtitle)}</p>')
    toc = [("findings", "Headline findings")] + [(s.key, s.title) for s in sections]
    out.append('<nav class="toc">' + "".join(f'<a href="#{esc(key)}">{esc(name)}</a>'
                                             for key, name in toc) + "</nav>")
    out.append('<section id="findings"><h2>Headline findings</h2>')
    for topic, sentences in _by_topic(findings).items():
        out.append(f"<h3>{esc(topic)}</h3>")
        out.append('<ul class="findings">' + "".join(f"<li>{esc(f)}</li>" for f in sentences)
                   + "</ul>")
    if not findings:
        out.append("<p>No findings: no tables.</p>")
    out.append("</section>")
    if problems:
        out.append('<div class="warnings"><p><strong>Report warnings</strong></p><ul>'
                   + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></div>")
    for section in sections:
        out.append(f'<section id="{esc(section.key)}"><h2>{esc(section.title)}</h2>')
        out += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
        for block in section.blocks:
            out.append(f"<h3>{esc(block.title)}</h3>")
            narrow = block.figure and block.tables and max(
                _table_px(table) for table in block.tables) <= 460
            out.append(f'<div class="pair{" side" if narrow else ""}">')
            if block.figure:
                svg, png = esc(block.figure + ".svg"), esc(block.figure + ".png")
                out.append(f'<figure><a href="{svg}"><img src="{svg}" alt="{esc(block.caption)}"'
                           f'></a><figcaption>{esc(block.caption)} '
                           f'<a href="{png}">PNG</a> · <a href="{svg}">SVG</a></figcaption>'
                           "</figure>")
            if block.tables:
                out.append('<div class="tables">' + "".join(_html_table(t) for t in block.tables)
                           + "</div>")
            out.append("</div>")
        out += [_html_table(table) for table in section.tables]
        if section.bullets:
            out.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in section.bullets)
                       + "</ul>")
        if section.code is not None:
            out.append(f"<pre><code>{esc(section.code)}</code></pre>")
        if section.links:
            out.append('<p class="links">Full data: ' + ", ".join(
                f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in section.links)
                + "</p>")
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# Entry point


def build_sections(run_dir: Path, tables: dict, meta: dict, figures: _Figures) -> list[Section]:
    """The report's sections, in order; one that fails is left out and noted."""
    from headcount.report_companion import SECTIONS

    builders: list[tuple[str, Callable[[], Section | None]]] = [
        ("pruning curves (downstream)",
         lambda: _curves_section(tables, run_dir, figures, "downstream")),
        ("pruning curves (masked LM)",
         lambda: _curves_section(tables, run_dir, figures, "pretrain")),
        ("recall", lambda: _recall_section(tables, run_dir, figures)),
        ("drift", lambda: _drift_section(tables, run_dir, figures)),
        ("correlation", lambda: _correlation_section(tables, run_dir, figures)),
        ("freezing", lambda: _freezing_section(tables, run_dir, figures)),
        ("pruned fine-tuning", lambda: _pruned_finetune_section(tables, run_dir, figures)),
        *((what, partial(build, tables, run_dir, figures)) for what, build in SECTIONS),
        ("fine-tuned models", lambda: _finetune_section(tables, run_dir)),
        ("configuration", lambda: _config_section(meta)),
        ("environment", lambda: _environment_section(meta)),
        ("notes", lambda: Section("notes", "Notes", bullets=[
            str(note) for note in meta.get("notes")]) if meta.get("notes") else None),
        ("tables", lambda: _tables_section(tables, run_dir)),
    ]
    sections = []
    for what, build in builders:
        try:
            section = build()
        except Exception as error:  # one bad table must not cost the whole report
            figures.problems.append(f"section on {what} left out: "
                                    f"{type(error).__name__}: {error}")
            continue
        if section is not None:
            sections.append(section)
    return sections


def _clean(tables: dict | None) -> dict[str, list[dict]]:
    """The tables with NaN as None (NaN is not equal to itself: it would break grouping)."""
    cleaned = {}
    for name, rows in (tables or {}).items():
        cleaned[name] = [{key: None if isinstance(value, float) and math.isnan(value)
                          else value for key, value in row.items()}
                         for row in (rows or []) if isinstance(row, dict)]
    return cleaned


def write_report(run_dir: str | Path, tables: dict[str, list[dict]],
                 meta: dict) -> dict[str, object]:
    """Write RUN_DIR/figures/*.{png,svg}, RUN_DIR/report.md and RUN_DIR/report.html from the
    study's tables; returns {"html": path, "markdown": path, "figures": [paths]}. A figure
    or finding that cannot be made is left out and listed under "Report warnings" (and
    warned about), so that one bad table does not cost the report of a whole study."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = _clean(tables)
    meta = meta or {}
    problems: list[str] = []
    findings = _findings(tables, problems)
    figures = _Figures(run_dir, problems)
    sections = build_sections(run_dir, tables, meta, figures)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    name = str(meta.get("name") or run_dir.name)
    title = f"headcount study: {name}"
    environment = meta.get("environment") or {}
    subtitle = " · ".join(part for part in (
        f"finished {environment['finished']}" if environment.get("finished") else "",
        _text(environment.get("device")) if environment.get("device") else "",
        "reproducing Chiang & Chen, “Why Can You Lay Off Heads? Investigating How BERT Heads "
        "Transfer”") if part)
    markdown = render_markdown(title, findings, sections, problems)
    if subtitle:
        markdown = markdown.replace("\n", f"\n\n{_md(subtitle)}\n", 1)
    md_path = write_atomic(run_dir / "report.md", markdown)
    html_path = write_atomic(run_dir / "report.html",
                             render_html(title, findings, sections, problems, subtitle))
    return {"html": html_path, "markdown": md_path, "figures": list(figures.saved)}
