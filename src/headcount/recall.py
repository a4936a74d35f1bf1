"""Recall of important heads (Eq. 5 of the reference study).

    Recall_t(x) = |H_x^(p) ∩ H_t^(d)| / |H_t^(d)|,   t = 0.9 by default

H_x^(p): the heads kept at the largest pruning ratio (pre-train importance order) whose
relative masked-LM performance is still >= x. H_t^(d): the heads kept at the largest ratio
(downstream importance order) whose relative downstream performance is still >= t. Both
come from pruning-curve CSVs (`headcount curve`), whose `pruned_heads` column lists the heads
removed at each step; heads are compared by their (layer, head) position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from headcount.errors import HeadcountError
from headcount.plotting import read_curve_csv


@dataclass(frozen=True)
class CurveSteps:
    """The main-metric steps of one pruning curve."""

    source: str
    seed: str
    total_heads: int
    steps: tuple[tuple[float, float, frozenset[str]], ...]  # (ratio, relative, pruned heads)

    def pruned_at(self, threshold: float) -> frozenset[str]:
        """Heads pruned at the largest ratio whose relative performance is still >=
        `threshold` (ratio 0, nothing pruned, when no step qualifies)."""
        qualifying = [(ratio, pruned) for ratio, relative, pruned in self.steps
                      if relative >= threshold]
        return max(qualifying, key=lambda item: item[0])[1] if qualifying else frozenset()


def curve_steps(path: str | Path) -> list[CurveSteps]:
    """One CurveSteps per seed in a curve CSV (one file may hold several seeds)."""
    return curve_steps_from_rows(read_curve_csv(path), str(path))


def curve_steps_from_rows(rows: list[dict], source: str) -> list[CurveSteps]:
    """One CurveSteps per seed from curve rows (as read from CSV, or as `curve_rows` made
    them)."""
    path = source
    by_seed: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("order") not in (None, "", "importance"):
            # Recall compares importance orders; draws of another order would also merge.
            raise HeadcountError(f"{path}: a curve pruned in {row['order']} order; recall "
                                 "needs curves pruned in importance order")
        if row["main"] in (True, "True"):
            by_seed.setdefault(str(row["seed"]), []).append(row)
    curves = []
    for seed, rows in sorted(by_seed.items()):
        steps = []
        totals = set()
        for row in rows:
            pruned = frozenset((row.get("pruned_heads") or "").split())
            totals.add(int(row["heads_remaining"]) + len(pruned))
            steps.append((float(row["ratio_pruned"]), float(row["relative"]), pruned))
        if len(totals) != 1:
            raise HeadcountError(f"{path}: inconsistent head counts {sorted(totals)} (seed {seed})")
        curves.append(CurveSteps(str(path), seed, totals.pop(), tuple(sorted(steps))))
    if not curves:
        raise HeadcountError(f"{path} has no main-metric rows")
    return curves


def recall(pretrain: CurveSteps, downstream: CurveSteps, x: float,
           threshold: float = 0.9) -> float:
    """Recall_threshold(x) for one pair of curves."""
    if pretrain.total_heads != downstream.total_heads:
        raise HeadcountError(
            f"{pretrain.source} and {downstream.source} are curves of models with "
            f"{pretrain.total_heads} and {downstream.total_heads} heads"
        )
    total = downstream.total_heads
    pruned_p, pruned_d = pretrain.pruned_at(x), downstream.pruned_at(threshold)
    kept_d = total - len(pruned_d)
    if kept_d == 0:
        return math.nan
    return (total - len(pruned_p | pruned_d)) / kept_d


def pair_curves(pretrain: list[CurveSteps], downstream: list[CurveSteps]):
    """One pre-train curve serves every downstream seed; otherwise curves pair by seed."""
    if len(pretrain) == 1:
        return [(pretrain[0], d) for d in downstream]
    by_seed = {curve.seed: curve for curve in pretrain}
    missing = [d.seed for d in downstream if d.seed not in by_seed]
    if missing:
        raise HeadcountError(
            f"no pre-train curve for seed(s) {', '.join(missing)}; give one pre-train curve "
            "or one per downstream seed"
        )
    return [(by_seed[d.seed], d) for d in downstream]


def recall_rows(pretrain: list[CurveSteps], downstream: list[CurveSteps], *,
                threshold: float = 0.9, step: float = 0.05) -> list[dict]:
    """The recall curve over x of paired curves (see `pair_curves`)."""
    if not 0 < step <= 1:
        raise HeadcountError(f"--step {step} is not in (0, 1]")
    if not 0 < threshold <= 1:
        raise HeadcountError(f"--threshold {threshold} is not in (0, 1]")
    pairs = pair_curves(pretrain, downstream)
    rows = []
    for i in range(int(round(1 / step)) + 1):
        x = round(i * step, 10)
        values = [recall(p, d, x, threshold) for p, d in pairs]
        finite = [v for v in values if not math.isnan(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        std = (math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
               if finite else math.nan)
        rows.append({"x": x, "threshold": threshold, "recall_mean": mean, "recall_std": std,
                     "n": len(finite), "per_seed": " ".join(f"{v:.6g}" for v in values)})
    return rows


