"""On-disk records: the columns, writers and readers of curve, sparsity and recall CSVs and
of scores, drift and correlation JSON files (checked as they are read)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from headcount.drift import DRIFT_KEYS
from headcount.errors import HeadcountError
from headcount.io import read_json_record, read_scores_record, write_atomic, write_csv
from headcount.layouts import UNIT_KINDS, architecture_signature
from headcount.pruning import CurvePoint

CURVE_COLUMNS = (
    "model", "task", "rank_task", "normalize", "schedule", "seed", "ratio_requested",
    "ratio_pruned", "heads_remaining", "metric", "value", "relative", "main", "pruned_heads",
    "order", "draw", "units", "neurons_remaining",
)


# Where a scores.json keeps each kind of unit's raw and normalised scores.
SCORE_FIELDS = {"heads": ("raw_scores", "scores"),
                "neurons": ("neuron_raw_scores", "neuron_scores")}


def recorded_units(record: dict) -> tuple[str, ...]:
    """The unit kinds a scores record holds (files without `units` hold heads)."""
    return tuple(unit for unit in UNIT_KINDS if SCORE_FIELDS[unit][0] in record)


def _check_architecture(path, record: dict, signature: dict, unit: str) -> None:
    theirs = record.get("architecture")
    if theirs is not None and not isinstance(theirs, dict):
        raise HeadcountError(f"{path}: 'architecture' must be an object, not {theirs!r}")
    keys = ("family", "hidden_size", "layers", unit)
    for key in keys if theirs else ():
        if key in theirs and theirs.get(key) != signature[key]:
            raise HeadcountError(
                f"{path} holds scores for another model: {key} {theirs.get(key)!r}, "
                f"this model has {signature[key]!r}"
            )


def read_scores(path: str | Path, model, units: str = "heads") -> tuple[torch.Tensor, dict]:
    """Raw scores of one kind of unit ("heads" or "neurons") from a `scores.json`, checked
    against `model`: a file without them, or of another shape, is refused in one line."""
    record = read_scores_record(path, required=())
    have = recorded_units(record)
    if units not in have:
        held = " and ".join(have) or "no"
        raise HeadcountError(
            f"{path} holds {held} scores, not {units} scores: estimate them with "
            f"`headcount importance --units {units}` (or both)")
    field = SCORE_FIELDS[units][0]
    try:
        raw = torch.tensor(record[field], dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise HeadcountError(f"{path}: {field} is not a table of numbers ({error})") from None
    signature = architecture_signature(model)
    _check_architecture(path, record, signature, units)
    expected = (signature["layers"], signature[units])
    if tuple(raw.shape) != expected:
        raise HeadcountError(
            f"{path} has {units} scores of shape {list(raw.shape)}; this model's {units} are "
            f"{list(expected)}"
        )
    return raw, record


def read_unit_scores(path: str | Path, model, kinds: tuple[str, ...]
                     ) -> tuple[dict[str, torch.Tensor], dict]:
    """`read_scores` for each kind in `kinds`, from one file."""
    scores, record = {}, {}
    for unit in kinds:
        scores[unit], record = read_scores(path, model, unit)
    return scores, record


def heads_text(heads) -> str:
    return " ".join(f"{layer}.{head}" for layer, head in heads)


def curve_rows(points: list[CurvePoint], meta: dict) -> list[dict]:
    """Tidy rows: one per step and metric; `relative` is value / value at ratio 0. `order`
    and `draw` default to "importance" and 0 when `meta` does not give them. `units` says
    what was pruned (heads, neurons or both); `neurons_remaining` is empty for curves of
    heads alone, and the pruned neurons themselves are not listed (thousands per row)."""
    base = points[0].evaluation.metrics
    meta = dict(meta)
    # Last, as in CURVE_COLUMNS (study tables take their column order from the rows).
    tail = {"order": meta.pop("order", "importance"), "draw": meta.pop("draw", 0)}
    rows = []
    for point in points:
        for metric, value in point.evaluation.metrics.items():
            reference = base[metric]
            relative = value / reference if reference != 0 else math.nan
            rows.append({
                **meta,
                "ratio_requested": point.ratio_requested,
                "ratio_pruned": point.ratio_pruned,
                "heads_remaining": point.heads_remaining,
                "metric": metric,
                "value": value,
                "relative": relative,
                "main": metric == point.evaluation.main,
                "pruned_heads": heads_text(point.pruned),
                **tail,
                "units": point.units,
                "neurons_remaining": point.neurons_remaining,
            })
    return rows


def write_curve_csv(path: str | Path, rows: list[dict]) -> Path:
    return write_csv(path, CURVE_COLUMNS, rows)


def read_drift(path: str | Path) -> dict:
    """A `drift.json` record of `headcount compare`, checked for the keys the analyses use."""
    record = read_json_record(path, "drift file")
    if not all(key in record for key in DRIFT_KEYS):
        raise HeadcountError(
            f"{path} is not a drift.json of `headcount compare` (needs {', '.join(DRIFT_KEYS)})"
        )
    return record


def read_correlation(path: str | Path) -> dict:
    """A `corr.json` record of `headcount correlate`."""
    record = read_json_record(path, "correlation file")
    records = record.get("records")
    if not isinstance(records, list) or not records or not all(
            isinstance(r, dict) and "points" in r for r in records):
        raise HeadcountError(f"{path} is not a corr.json of `headcount correlate`")
    return record


def _read_csv(path: str | Path, what: str, needed: set[str]) -> list[dict]:
    """The rows of a headcount `what` CSV, refused when it lacks the `needed` columns."""
    path = Path(path)
    if not path.is_file():
        raise HeadcountError(f"{what} file not found: {path}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows or not needed <= set(rows[0]):
        raise HeadcountError(f"{path} is not a headcount {what} CSV (columns {sorted(needed)})")
    return rows


def read_curve_csv(path: str | Path) -> list[dict]:
    return _read_csv(path, "curve", {"ratio_pruned", "relative", "metric", "main", "normalize",
                                     "seed", "task"})


def read_recall_csv(path: str | Path) -> list[dict]:
    return _read_csv(path, "recall", {"x", "recall_mean", "recall_std", "threshold"})


def write_recall_csv(path: str | Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


SPARSITY_COLUMNS = ("model", "task", "scope", "sparsity_requested", "sparsity_achieved", "metric",
                 "value", "relative", "mean_loss", "main")


def write_sparsity_csv(path: str | Path, rows: list[dict]) -> Path:
    from headcount.io import write_csv

    return write_csv(path, SPARSITY_COLUMNS, rows)
