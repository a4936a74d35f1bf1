"""Recall of important heads (Eq. 5) on hand-built curves."""

from __future__ import annotations

import pytest

from headcount.cli.app import main
from headcount.errors import HeadcountError
from headcount.jobs.analysis import recall_job
from headcount.recall import curve_steps, recall
from headcount.records import CURVE_COLUMNS, write_curve_csv

# 4 heads: 0.0 0.1 1.0 1.1. (ratio, relative, heads pruned so far)
PRETRAIN = [(0.0, 1.0, ""), (0.25, 0.95, "0.0"), (0.5, 0.8, "0.0 1.1"),
            (0.75, 0.5, "0.0 1.1 0.1"), (1.0, 0.1, "0.0 1.1 0.1 1.0")]
DOWNSTREAM = [(0.0, 1.0, ""), (0.25, 0.97, "1.1"), (0.5, 0.92, "1.1 1.0"),
              (0.75, 0.6, "1.1 1.0 0.0"), (1.0, 0.5, "1.1 1.0 0.0 0.1")]


def write_curve(path, steps, seed=0, total=4):
    rows = []
    for ratio, relative, pruned in steps:
        rows.append({column: "" for column in CURVE_COLUMNS} | {
            "model": "m", "task": "t", "rank_task": "t", "normalize": "l1",
            "schedule": "one-shot", "seed": seed, "ratio_requested": ratio,
            "ratio_pruned": ratio, "heads_remaining": total - len(pruned.split()),
            "metric": "accuracy", "value": relative, "relative": relative, "main": True,
            "pruned_heads": pruned,
        })
    write_curve_csv(path, rows)
    return path


@pytest.fixture
def curves(tmp_path):
    pretrain = curve_steps(write_curve(tmp_path / "p.csv", PRETRAIN))[0]
    downstream = curve_steps(write_curve(tmp_path / "d.csv", DOWNSTREAM))[0]
    return pretrain, downstream


@pytest.mark.parametrize("x, expected", [
    (1.0, 1.0),    # nothing pruned: every downstream-important head is kept
    (0.9, 0.5),    # pre-train keeps 0.1 1.0 1.1; downstream needs 0.0 0.1 -> {0.1}
    (0.8, 0.5),    # keeps 0.1 1.0 -> {0.1}
    (0.5, 0.0),    # keeps 1.0 only
    (0.05, 0.0),   # everything pruned
])
def test_recall_by_hand(curves, x, expected):
    pretrain, downstream = curves
    assert recall(pretrain, downstream, x, 0.9) == pytest.approx(expected)


def test_the_largest_qualifying_ratio_counts_even_after_a_dip(tmp_path):
    dip = [(0.0, 1.0, ""), (0.25, 0.7, "0.0"), (0.5, 0.92, "0.0 0.1"),
           (0.75, 0.2, "0.0 0.1 1.0"), (1.0, 0.1, "0.0 0.1 1.0 1.1")]
    curve = curve_steps(write_curve(tmp_path / "dip.csv", dip))[0]
    assert curve.pruned_at(0.9) == frozenset({"0.0", "0.1"})
    assert curve.pruned_at(1.5) == frozenset()


def test_mean_and_std_over_seeds(tmp_path):
    pretrain = write_curve(tmp_path / "p.csv", PRETRAIN)
    # seed 1's downstream curve needs heads 1.0 1.1 (pruned 0.0 0.1 at ratio 0.5)
    other = [(0.0, 1.0, ""), (0.25, 0.97, "0.0"), (0.5, 0.92, "0.0 0.1"),
             (0.75, 0.6, "0.0 0.1 1.0"), (1.0, 0.5, "0.0 0.1 1.0 1.1")]
    downstream = [write_curve(tmp_path / "d0.csv", DOWNSTREAM, seed=0),
                  write_curve(tmp_path / "d1.csv", other, seed=1)]
    rows = {row["x"]: row for row in recall_job([str(pretrain)], list(map(str, downstream)),
                                                step=0.1)}
    # x = 0.9: seed 0 -> 0.5; seed 1: kept 0.1 1.0 1.1 vs needed 1.0 1.1 -> 1.0
    assert rows[0.9]["recall_mean"] == pytest.approx(0.75)
    assert rows[0.9]["recall_std"] == pytest.approx(0.25)
    assert rows[0.9]["n"] == 2
    assert rows[1.0]["recall_mean"] == 1.0 and rows[1.0]["recall_std"] == 0.0


def test_curves_of_different_models_are_refused(tmp_path, curves):
    pretrain, _ = curves
    eight = curve_steps(write_curve(tmp_path / "e.csv", [(0.0, 1.0, "")], total=8))[0]
    with pytest.raises(HeadcountError, match="4 and 8 heads"):
        recall(pretrain, eight, 0.5)


def test_cli_recall_and_plot(tmp_path, capsys):
    pretrain = write_curve(tmp_path / "p.csv", PRETRAIN)
    downstream = write_curve(tmp_path / "d.csv", DOWNSTREAM)
    out = tmp_path / "recall.csv"
    assert main(["recall", "--pretrain", str(pretrain), "--downstream", str(downstream),
                 "--out", str(out)]) == 0
    assert "x=0.90: recall 0.500" in capsys.readouterr().out
    figure = tmp_path / "recall.png"
    assert main(["plot", "recall", str(out), "--out", str(figure)]) == 0
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert main(["recall", "--pretrain", str(pretrain), "--downstream", str(downstream),
                 "--threshold", "0", "--out", str(out)]) == 2
    assert "--threshold 0" in capsys.readouterr().err
