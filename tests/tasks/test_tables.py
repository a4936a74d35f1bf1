"""Local tables for `--task file:PATH`: .tsv, .csv and .jsonl."""

from __future__ import annotations

import json

import pytest

from headcount.errors import DataError
from headcount.tasks.base import Example
from headcount.tasks.tables import load_table

ROWS = [
    {"text": 'He said "hi', "pair": "A greeting, of sorts.", "label": "pos"},
    {"text": "Stocks fell\tsharply", "pair": "Markets", "label": "neg"},
]


def test_tsv_round_trip(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text('sentence\tother\tlabel\n"quoted\ttab"\tx\tpos\nplain\ty\tneg\n',
                    encoding="utf-8")
    assert load_table(path, "sentence", label_column="label") == [
        Example("quoted\ttab", None, "pos"), Example("plain", None, "neg")]


def test_csv_round_trip_with_pair_and_bom(tmp_path):
    import csv

    path = tmp_path / "data.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "pair", "label"])
        writer.writeheader()
        writer.writerows(ROWS)
    examples = load_table(path, "text", "pair", "label")
    assert examples == [Example(r["text"], r["pair"], r["label"]) for r in ROWS]


def test_jsonl_round_trip_keeps_raw_labels_and_skips_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"q": "one", "a": "uno", "y": 1}), "",
             json.dumps({"q": "two", "a": "dos", "y": 0.5}), "   ",
             json.dumps({"q": "three", "a": "tres", "y": "x"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = load_table(path, "q", "a", "y")
    assert [e.label for e in examples] == [1, 0.5, "x"]
    assert examples[0] == Example("one", "uno", 1)


def test_unlabelled_table(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "only text"}\n', encoding="utf-8")
    assert load_table(path, "text") == [Example("only text")]


def test_missing_column_lists_available(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nhello,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'sentence' \(available: 'text', 'label'\)"):
        load_table(path, "sentence", label_column="label")
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: no column 'label' \(available: 'text'\)"):
        load_table(jsonl, "text", label_column="label")


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nope\.tsv"):
        load_table(tmp_path / "nope.tsv", "text")
    path = tmp_path / "data.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"'\.xlsx'.*\.tsv, \.csv, \.jsonl"):
        load_table(path, "text")


def test_bad_json_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "broken", \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        load_table(path, "text", label_column="label")
    path.write_text('["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: expected a JSON object, found list"):
        load_table(path, "text")


@pytest.mark.parametrize(("name", "content"), [
    ("empty.csv", ""),
    ("header_only.tsv", "text\tlabel\n"),
    ("blank.jsonl", "\n\n"),
])
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"empty|no rows"):
        load_table(path, "text", label_column="label")


@pytest.mark.parametrize(("content", "message"), [
    ("text,label\nhello,\n", r"line 2: empty label in column 'label'"),
    ("text,label\nhello\n", r"line 2: empty label"),
    ("text,label\n ,1\n", r"line 2: column 'text' must hold non-empty text"),
    ("text,label\na,1,extra\n", r"line 2: 3 fields but the header has 2"),
])
def test_bad_rows(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_table(path, "text", label_column="label")


def test_jsonl_null_label_and_non_string_text(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": null}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: empty label"):
        load_table(path, "text", label_column="label")
    path.write_text('{"text": 5, "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"must hold non-empty text, found 5"):
        load_table(path, "text", label_column="label")
