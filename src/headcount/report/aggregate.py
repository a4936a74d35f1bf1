"""Aggregates of the study's tables that the findings, figures and sections share: pruning
curves averaged over seeds (`curve_groups`), how far a curve stays above a threshold
(`retained`), recall points, the order of the fine-tuning stages and the summary of the
importance/drift correlations.

Example:
    >>> retained([(0.0, 1.0), (0.5, 0.95), (1.0, 0.4)], 0.9)
    (0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from headcount.report.format import (
    NORMALIZATION_ORDER,
    RECALL_TARGET,
    STAGES,
    as_number,
    as_text,
    group_rows,
    is_main,
    mean_of,
    mean_std_count,
    seed_count,
    unique,
)

# The columns that tell one averaged pruning curve from another (with the curve's kind).
CURVE_KEYS = ("model", "task", "rank_task", "schedule", "normalize")


def retained(points: Iterable[tuple[float, float]],
             threshold: float) -> tuple[float | None, float | None]:
    """(the largest ratio up to which the mean is still >= threshold at every ratio
    measured, the first ratio at which it is below), over (ratio, mean) in ratio order:
    (None, r) when it is below already at the first ratio, (r, None) when never."""
    kept = None
    for ratio, mean in points:
        if mean < threshold:
            return kept, ratio
        kept = ratio
    return kept, None


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
        """`retained` over the ratios pruned of this curve."""
        return retained(((point.ratio, point.mean) for point in self.points), threshold)

    def overall(self) -> float:
        return sum(point.mean for point in self.points) / len(self.points)

    def members(self, rows: Iterable[dict]) -> list[dict]:
        """The rows of `rows` that make this curve (every seed)."""
        key = (self.model, self.task, self.rank_task, self.schedule, self.normalize)
        return [row for row in rows if curve_kind(row) == self.curve
                and tuple(row.get(name) for name in CURVE_KEYS) == key]


def curve_kind(row: dict) -> str:
    curve = row.get("curve")
    if curve in ("downstream", "pretrain"):
        return curve
    return "pretrain" if row.get("task") == "mlm" else "downstream"


def usable_curve_rows(rows: Iterable[dict]) -> list[dict]:
    return [row for row in rows if is_main(row) and as_number(row.get("relative")) is not None
            and (as_number(row.get("ratio_pruned")) is not None
                 or as_number(row.get("ratio_requested")) is not None)]


def curve_groups(rows: list[dict]) -> list[CurveGroup]:
    """Main-metric curves grouped by model, curve, evaluated task, ranking task, schedule
    and normalisation, with the mean relative performance over seeds at each ratio."""
    rows = usable_curve_rows(rows)
    variety: dict[tuple, tuple[set, set]] = {}
    for row in rows:
        ranks, schedules = variety.setdefault((row.get("model"), curve_kind(row),
                                               row.get("task")), (set(), set()))
        ranks.add(str(row.get("rank_task")))
        schedules.add(str(row.get("schedule")))
    by_curve = group_rows(({**row, "_curve": curve_kind(row)} for row in rows), "_curve",
                          *CURVE_KEYS)
    ordered = sorted(by_curve.items(), key=lambda item: (
        unique([k[1:3] for k in by_curve]).index(item[0][1:3]),
        unique([k[5] for k in by_curve], NORMALIZATION_ORDER).index(item[0][5])))
    groups = []
    for (curve, model, task, rank_task, schedule, normalize), members in ordered:
        ranks, schedules = variety[(model, curve, task)]
        label = as_text(normalize)
        qualifiers = []
        if len(ranks) > 1 or (curve == "downstream" and rank_task not in (None, task)):
            qualifiers.append(f"ranked by {rank_task}")
        if len(schedules) > 1:
            qualifiers.append(f"{schedule} schedule")
        if qualifiers:
            label += ", " + ", ".join(qualifiers)
        groups.append(CurveGroup(model, curve, task, rank_task, schedule, normalize, label,
                                 as_text(members[0].get("metric")), seed_count(members),
                                 _curve_points(members)))
    return groups


def _curve_points(members: list[dict]) -> list[CurvePoint]:
    """The mean over seeds at each requested ratio (the ratio pruned where none was
    requested), in ratio order."""
    by_ratio: dict[float, list[dict]] = {}
    for row in members:
        key = as_number(row.get("ratio_requested"))
        key = as_number(row.get("ratio_pruned")) if key is None else key
        by_ratio.setdefault(round(key, 9), []).append(row)
    points = []
    for key, at_ratio in sorted(by_ratio.items()):
        mean, std, count = mean_std_count(row.get("relative") for row in at_ratio)
        ratio = mean_of(row.get("ratio_pruned") for row in at_ratio)
        points.append(CurvePoint(key, key if ratio is None else ratio, mean, std, count))
    return points


# --------------------------------------------------------------------------------------
# Recall, fine-tuning stages, correlation


def recall_points(rows: list[dict]) -> list[tuple[float, float | None, float | None, dict]]:
    """(x, mean recall, its std, row) of the rows with an x, in x order."""
    points = []
    for row in rows:
        x = as_number(row.get("x"))
        if x is not None:
            points.append((x, as_number(row.get("recall_mean")),
                           as_number(row.get("recall_std")), row))
    return sorted(points, key=lambda point: point[0])


def recall_reached(rows: list[dict]) -> float | None:
    """The smallest x at which the mean recall is >= RECALL_TARGET."""
    for x, mean, _, _ in recall_points(rows):
        if mean is not None and mean >= RECALL_TARGET - 1e-12:
            return x
    return None


def recall_seeds(rows: Iterable[dict]) -> int:
    """The largest number of seeds (column `n`) behind a recall row; 0 when none."""
    return max((int(v) for v in (as_number(row.get("n")) for row in rows) if v is not None),
               default=0)


def stage_order(rows: Iterable[dict]) -> list:
    return unique((row.get("stage") for row in rows), STAGES)


def correlation_summary(rows: list[dict]) -> dict[tuple, dict]:
    """Per (model, task, importance, normalize): seeds, mean r/ρ and their ranges."""
    summary = {}
    for key, members in group_rows(rows, "model", "task", "importance", "normalize").items():
        r = [v for v in (as_number(row.get("pearson_r")) for row in members) if v is not None]
        rho = [v for v in (as_number(row.get("spearman_rho")) for row in members)
               if v is not None]
        summary[key] = {
            "seeds": seed_count(members), "r": r, "rho": rho,
            "n": mean_of(row.get("n") for row in members),
            "significant": sum(1 for row in members
                               if (as_number(row.get("pearson_p")) or 1.0) < 0.05),
            "slope": mean_of(row.get("slope") for row in members),
            "intercept": mean_of(row.get("intercept") for row in members),
        }
    return summary


# --------------------------------------------------------------------------------------
# Per seed: what the verdicts compare (`headcount.report.verdicts`)


def _row_ratio(row: dict) -> float | None:
    ratio = as_number(row.get("ratio_pruned"))
    return as_number(row.get("ratio_requested")) if ratio is None else ratio


def seed_curves(rows: Iterable[dict]) -> list[list[tuple[float, float]]]:
    """The (ratio pruned, relative) points of one curve's main rows, in ratio order, per seed
    (and per draw of a random order)."""
    curves = []
    for members in group_rows(usable_curve_rows(rows), "seed", "draw").values():
        curves.append(sorted((_row_ratio(row), as_number(row.get("relative")))
                             for row in members if _row_ratio(row) is not None))
    return curves


def seed_areas(rows: Iterable[dict]) -> list[float]:
    """The mean relative performance over the ratios measured (the area under the curve),
    per seed (and draw) of one curve's rows."""
    return [sum(mean for _, mean in points) / len(points)
            for points in seed_curves(rows) if points]


def seed_reaches(rows: Iterable[dict], threshold: float) -> list[float | None]:
    """`retained`'s reach (the largest ratio up to which relative >= threshold) per seed
    (and draw) of one curve's rows."""
    return [retained(points, threshold)[0] for points in seed_curves(rows)]


def drift_contrast(points: list[dict]) -> dict | None:
    """The lowest and the highest third (at least one layer each) of drift points (one per
    layer, in layer order, as `drift_layer_means` gives them): their layers and mean JS
    divergence and L2 distance; None with fewer than two layers with a JS divergence."""
    measured = [point for point in points if as_number(point.get("js_mean")) is not None]
    if len(measured) < 2:
        return None
    third = max(1, len(measured) // 3)
    low, high = measured[:third], measured[-third:]
    return {"low_layers": [p["layer"] for p in low], "high_layers": [p["layer"] for p in high],
            "js_low": mean_of(p["js_mean"] for p in low),
            "js_high": mean_of(p["js_mean"] for p in high),
            "l2_low": mean_of(p.get("l2") for p in low),
            "l2_high": mean_of(p.get("l2") for p in high)}
