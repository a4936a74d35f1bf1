"""Small helpers of the report stage (`headcount.report.assemble`) on table values: the study's
thresholds and colours, numbers read leniently from table cells, grouping, means and
population standard deviations over seeds, and text formatting of values.

Example:
    >>> _fmt_ms(*_stats([0.9, 0.8])[:2])
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
NORMALIZATION_ORDER = ("l1", "l2", "none")
STAGES = ("unpruned", "pruned-before", "pruned-after")
STAGE_COLOURS = {"unpruned": "tab:gray", "pruned-before": "tab:orange",
                 "pruned-after": "tab:blue"}
IMPORTANCE_KINDS = ("pretrain", "downstream")
TASK_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
MISSING = "–"


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


def _clean(tables: dict | None) -> dict[str, list[dict]]:
    """The tables with NaN as None (NaN is not equal to itself: it would break grouping)."""
    cleaned = {}
    for name, rows in (tables or {}).items():
        cleaned[name] = [{key: None if isinstance(value, float) and math.isnan(value)
                          else value for key, value in row.items()}
                         for row in (rows or []) if isinstance(row, dict)]
    return cleaned
