"""Local labelled data (`--task file:PATH`): .tsv, .csv and .jsonl tables.

Labels are returned as written (strings from tsv/csv, JSON values from jsonl): they are
mapped onto a model's label ids later, once the model is known.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from headcount.errors import DataError
from headcount.tasks.base import Example

SUPPORTED_EXTENSIONS = (".tsv", ".csv", ".jsonl")


def load_table(
    path: str | Path,
    text_column: str,
    text_pair_column: str | None = None,
    label_column: str | None = None,
) -> list[Example]:
    """Read a local table into `Example`s.

    `.tsv`/`.csv` need a header row; `.jsonl` holds one JSON object per line (blank lines
    are skipped). Text (and pair) must be non-empty strings; when `label_column` is given
    every row needs a non-empty label, kept raw. Any problem raises a one-line DataError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data file not found: {path}.")
    if not path.is_file():
        raise DataError(f"Data path is not a file: {path}.")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"Unsupported data file extension {suffix or '(none)'!r} for {path}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    records = _jsonl_records(path) if suffix == ".jsonl" else _delimited_records(path, suffix)
    columns = (text_column, text_pair_column, label_column)
    examples = [_example(record, number, path, *columns) for number, record in records]
    if not examples:
        raise DataError(f"{path} contains no rows.")
    return examples


def _delimited_records(path: Path, suffix: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row dict) from a .tsv/.csv file with a header row."""
    delimiter = "\t" if suffix == ".tsv" else ","
    # utf-8-sig: spreadsheet programs often save a BOM that would otherwise glue itself
    # onto the first column name.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            header = reader.fieldnames
        except csv.Error as exc:
            raise DataError(f"{path}: cannot read the header row ({exc}).") from None
        if not header:
            raise DataError(f"{path} is empty (expected a header row and data rows).")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"{path} line {reader.line_num}: {exc}.") from None
            if None in row:  # DictReader's key for fields beyond the header
                raise DataError(
                    f"{path} line {reader.line_num}: {len(header) + len(row[None])} fields "
                    f"but the header has {len(header)}."
                )
            yield reader.line_num, row


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a .jsonl file."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: invalid JSON ({exc.msg}).") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path} line {number}: expected a JSON object, found "
                    f"{type(record).__name__}."
                )
            yield number, record


def _example(record: dict, number: int, path: Path, text_column: str,
             text_pair_column: str | None, label_column: str | None) -> Example:
    """Build one Example from a row, checking the requested columns."""
    text = _text(record, text_column, number, path)
    pair = _text(record, text_pair_column, number, path) if text_pair_column else None
    label = _label(record, label_column, number, path) if label_column else None
    return Example(text=text, text_pair=pair, label=label)


def _field(record: dict, column: str, number: int, path: Path):
    if column not in record:
        available = ", ".join(repr(k) for k in record if k is not None) or "none"
        raise DataError(
            f"{path} line {number}: no column {column!r} (available: {available})."
        )
    return record[column]


def _text(record: dict, column: str, number: int, path: Path) -> str:
    value = _field(record, column, number, path)
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"{path} line {number}: column {column!r} must hold non-empty text, "
            f"found {value!r}."
        )
    return value


def _label(record: dict, column: str, number: int, path: Path):
    value = _field(record, column, number, path)
    # A csv row shorter than the header yields None; JSON null or "" is equally unlabelled.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path} line {number}: empty label in column {column!r}.")
    if not isinstance(value, (str, int, float)):
        raise DataError(
            f"{path} line {number}: label {value!r} in column {column!r} must be a string "
            f"or a number."
        )
    return value
