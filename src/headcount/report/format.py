"""Small helpers of the report on table values: the study's thresholds and colours, numbers
read leniently from table cells, grouping, means and population standard deviations over
seeds, and text formatting of values. (The task colours are `headcount.plotting`'s.)

Example:
    >>> fmt_ms(*mean_std_count([0.9, 0.8])[:2])
    '0.850 ± 0.050'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

FIGURE_DIR = "figures"
TABLE_DIR = "tables"
RETAIN = 0.9  # downstream: share of the unpruned performance still "kept" (Figure 1)
MLM_RETAIN = 0.75  # masked LM: the paper's guideline (section 4)
RECALL_TARGET = 0.9  # recall of downstream-important heads (Figure 3)
PAPER_MAX_ABS_R = 0.10  # the paper: |r| <= 0.10 between importance and JS divergence
PAPER_PRUNED = 0.5  # the paper: >= 90% kept with more than half of the heads pruned
PAPER_FROZEN = {"cola": 0.91}  # the paper, 5 frozen layers: 0.91 on CoLA ...
PAPER_FROZEN_OTHER = 0.98  # ... and more than 0.98 on SST-2, QQP and MNLI
# When a result cannot support a finding (`headcount.report.verdicts`):
MLM_MIN_RECALL = 0.2  # an unpruned masked LM below this recall@1 is too weak to be read
MLM_MAX_RISE = 0.05  # relative recall@1 above 1 + this as heads go: heads do not carry it
CONVERGED_DROP = 0.1  # training loss still falling by more than this over the last quarter
# How this run's numbers are read against the companion papers' claims (`claims`):
EVEN_TOP10 = 0.2  # "spread evenly": the top 10% of heads carry at most 20% of the gain
HARMLESS = 0.95  # "harmless" weight pruning: at least 95% of the unpruned performance
HARMLESS_LEVELS = (0.3, 0.4)  # Gordon et al.'s low levels
NORMALIZATION_ORDER = ("l1", "l2", "none")
STAGES = ("unpruned", "pruned-before", "pruned-after")
# What the stages of pruned fine-tuning are, in words: pruned (before fine-tuning it again),
# and pruned, then fine-tuned again.
STAGE_NAMES = {"unpruned": "unpruned", "pruned-before": "pruned",
               "pruned-after": "pruned and fine-tuned again"}
STAGE_COLOURS = {"unpruned": "tab:gray", "pruned-before": "tab:orange",
                 "pruned-after": "tab:blue"}
IMPORTANCE_KINDS = ("pretrain", "downstream")
MISSING = "–"


# --------------------------------------------------------------------------------------
# Small helpers on table values


def as_number(value) -> float | None:
    """A finite float, or None (None, NaN, inf, bool, text that is not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_true(value) -> bool:
    return value is True or (isinstance(value, int | float) and value == 1) or (
        isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def is_main(row: dict) -> bool:
    """Rows of the main metric; a table without a `main` column has only main rows."""
    return row.get("main") is None or is_true(row.get("main"))


def as_text(value) -> str:
    return MISSING if value is None else str(value)


def unique(values: Iterable, first: Iterable = ()) -> list:
    """Distinct values in order of first appearance, the ones in `first` first (in its
    order, when present)."""
    seen = list(dict.fromkeys(values))
    preferred = [value for value in first if value in seen]
    return preferred + [value for value in seen if value not in preferred]


def group_rows(rows: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in keys), []).append(row)
    return groups


def mean_std_count(values: Iterable) -> tuple[float | None, float | None, int]:
    """Mean, population standard deviation and count of the finite values."""
    finite = [v for v in (as_number(value) for value in values) if v is not None]
    if not finite:
        return None, None, 0
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)), len(finite)


def mean_of(values: Iterable) -> float | None:
    return mean_std_count(values)[0]


def seed_count(rows: Iterable[dict]) -> int:
    return len({str(row.get("seed")) for row in rows})


def seeds_text(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return as_text(value)
    if isinstance(value, int):
        return str(value)
    number = as_number(value)
    if number is None:
        return MISSING if isinstance(value, float) else str(value)
    text = f"{number:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.00"


def fmt_sig(value, digits: int = 3) -> str:
    number = as_number(value)
    return MISSING if number is None else f"{number:.{digits}g}"


def fmt_ms(mean, std, count: int = 2, digits: int = 3) -> str:
    if mean is None:
        return MISSING
    if std is None or count < 2:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_stats(values: Iterable, count: int | None = None, digits: int = 3) -> str:
    """`fmt_ms` of the mean and std of `values`; `count` (say, the number of seeds), when
    given instead of the number of values, decides whether the std is shown."""
    mean, std, number = mean_std_count(values)
    return fmt_ms(mean, std, number if count is None else count, digits)


def pct(ratio: float) -> str:
    """0.6 -> '60%'; 0.125 -> '12.5%'."""
    value = 100 * ratio
    if abs(value - round(value)) < 0.05:
        return f"{round(value)}%"
    return f"{value:.1f}%"


def reach_text(kept: float | None, threshold: float, pruned: str = "pruned") -> str:
    """How far a curve keeps `threshold`, from `retained`'s reach: never 'up to 0%' (a
    curve below the threshold from its first ratio after 0 did not keep it at all).

    Example:
        >>> reach_text(0.6, 0.9), reach_text(0.0, 0.9)
        ('≥ 90% up to 60% pruned', 'below 90% from the first ratio pruned')
    """
    if kept is None or kept <= 0:
        return f"below {pct(threshold)} from the first ratio {pruned}"
    return f"≥ {pct(threshold)} up to {pct(kept)} {pruned}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return MISSING
    return f"{ratio:.2f}" if abs(100 * ratio - round(100 * ratio)) < 1e-6 else f"{ratio:.3f}"


def layer_sort_key(layer):
    number = as_number(layer)
    return (number is None, number if number is not None else 0.0, str(layer))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "model"


def table_rows(tables: dict, name: str) -> list[dict]:
    rows = (tables or {}).get(name)
    return [row for row in rows if isinstance(row, dict)] if rows else []


def models_in(rows: Iterable[dict]) -> list:
    return unique(row.get("model") for row in rows)


def rows_of_model(rows: Iterable[dict], model) -> list[dict]:
    return [row for row in rows if row.get("model") == model]


def pick_normalization(values: Iterable) -> str | None:
    """'l1' when present (the paper's choice), else the first."""
    ordered = unique(values, NORMALIZATION_ORDER)
    return ordered[0] if ordered else None


def clean_tables(tables: dict | None) -> dict[str, list[dict]]:
    """The tables with NaN as None (NaN is not equal to itself: it would break grouping)."""
    cleaned = {}
    for name, rows in (tables or {}).items():
        cleaned[name] = [{key: None if isinstance(value, float) and math.isnan(value)
                          else value for key, value in row.items()}
                         for row in (rows or []) if isinstance(row, dict)]
    return cleaned
