"""Correlation between head importance and JS divergence; `correlate` and `plot correlation`.

Statistics are checked against scipy.stats; records are built by hand (shapes, ALBERT's one
row of shared heads) and, once, by the real importance and drift jobs on tiny checkpoints.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import save_checkpoint
from scipy import stats

from headcount.cli import build_parser
from headcount.correlation import align, correlate, correlation_record
from headcount.errors import HeadcountError
from headcount.jobs.analysis import correlate_job, drift_job
from headcount.jobs.measure import importance_job
from headcount.jobs.prepared import DataOptions


def run(*argv):
    args = build_parser().parse_args([str(arg) for arg in argv])
    args.run(args)


def scores_record(rows, *, task="mlm:wiki", shared=False, family="bert"):
    return {"task": task, "model": "m", "normalize": "l1", "layers": len(rows),
            "heads": len(rows[0]), "scores": rows, "raw_scores": [[2 * v for v in r] for r in rows],
            "shared_across_layers": shared, "architecture": {"family": family}}


def drift_record(js, *, task="sst2", shared=False, family="bert"):
    means = [sum(v for v in r if v is not None) / max(1, sum(v is not None for v in r))
             for r in js]
    return {"task": task, "pretrained": "p", "finetuned": "f", "layers": len(js),
            "heads": len(js[0]), "js": js, "js_layer_mean": means,
            "js_layer_max": [max((v for v in r if v is not None), default=None) for r in js],
            "l2": [1.0] * len(js), "l2_embeddings": 0.5, "shared_across_layers": shared,
            "architecture": {"family": family}}


def test_statistics_match_scipy_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.random(48)
    y = 0.3 * x + rng.normal(0, 0.2, 48)
    result = correlate(x.tolist(), y.tolist())
    pearson, spearman, line = stats.pearsonr(x, y), stats.spearmanr(x, y), stats.linregress(x, y)
    assert result["n"] == 48
    assert result["pearson_r"] == pytest.approx(pearson.statistic, abs=1e-12)
    assert result["pearson_p"] == pytest.approx(pearson.pvalue, rel=1e-9)
    assert result["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert result["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-9)
    assert result["slope"] == pytest.approx(line.slope, abs=1e-12)
    assert result["intercept"] == pytest.approx(line.intercept, abs=1e-12)
    # the line is js on importance: least squares of y given x
    assert result["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-9)


def test_record_pairs_heads_layer_by_layer():
    rng = np.random.default_rng(1)
    importance = rng.random((3, 4)).tolist()
    js = rng.random((3, 4)).tolist()
    record = correlation_record(scores_record(importance), drift_record(js))
    assert record["n"] == 12 and record["js_reduction"].startswith("per head")
    assert record["pearson_r"] == pytest.approx(
        stats.pearsonr(np.ravel(importance), np.ravel(js)).statistic)
    assert record["points"]["heads"][5] == [1, 1]
    raw = correlation_record(scores_record(importance), drift_record(js), raw=True)
    assert raw["importance"] == "raw_scores" and raw["slope"] == pytest.approx(record["slope"] / 2)


def test_albert_one_row_of_shared_heads_uses_js_averaged_over_applications():
    rng = np.random.default_rng(2)
    importance = rng.random((1, 4)).tolist()
    js = rng.random((3, 4))  # three layer applications
    heads, xs, ys, reduction = align(
        scores_record(importance, shared=True, family="albert"),
        drift_record(js.tolist(), shared=True, family="albert"))
    assert heads == [[0, h] for h in range(4)] and xs == importance[0]
    assert ys == pytest.approx(js.mean(axis=0).tolist())
    assert "averaged over the 3 layer applications" in reduction


def test_heads_without_js_are_left_out():
    js = [[0.1, None, 0.3, 0.2], [None, None, None, None]]
    heads, xs, ys, _ = align(scores_record([[1, 2, 3, 4], [5, 6, 7, 8]]), drift_record(js))
    assert heads == [[0, 0], [0, 2], [0, 3]] and xs == [1, 3, 4] and ys == [0.1, 0.3, 0.2]


@pytest.mark.parametrize(("scores", "drift", "message"), [
    ([[1, 2, 3]] * 2, [[0.1] * 4] * 2, r"\(2 x 3 heads\).*\(2 x 4 heads\): different numbers "
                                       "of heads per layer"),
    ([[1, 2, 3, 4]] * 3, [[0.1] * 4] * 2, "different numbers of layers"),
    ([[1, 2, 3, 4]], [[0.1] * 4] * 2, "different numbers of layers"),  # one row, not shared
])
def test_mismatched_shapes_are_refused(scores, drift, message):
    with pytest.raises(HeadcountError, match=message):
        correlation_record(scores_record(scores), drift_record(drift), names=("s.json", "d.json"))


def test_different_families_are_refused():
    with pytest.raises(HeadcountError, match="scores are of a bert model, the drift of a roberta"):
        align(scores_record([[1, 2, 3]]), drift_record([[0.1, 0.2, 0.3]], family="roberta"))


def test_degenerate_inputs():
    with pytest.raises(HeadcountError, match="at least 3 heads.*got 2"):
        correlate([1.0, 2.0], [0.1, 0.2])
    with pytest.warns(UserWarning, match="importance constant"):
        result = correlate([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    assert result["pearson_r"] is None and result["slope"] is None
    json.dumps(result, allow_nan=False)


def test_cli_correlate_and_plot_from_hand_written_files(tmp_path, capsys):
    rng = np.random.default_rng(3)
    paths = []
    for task in ("mlm:wiki", "sst2"):
        path = tmp_path / f"{task.replace(':', '_')}.json"
        path.write_text(json.dumps(scores_record(rng.random((2, 4)).tolist(), task=task)))
        paths.append(path)
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps(drift_record(rng.random((2, 4)).tolist())))
    out = tmp_path / "corr.json"
    run("correlate", "--scores", paths[0], "--scores", paths[1], "--drift", drift, "--out", out)
    record = json.loads(out.read_text())
    assert [r["scores_task"] for r in record["records"]] == ["mlm:wiki", "sst2"]
    assert record["drift_task"] == "sst2" and all(r["n"] == 8 for r in record["records"])
    stdout = capsys.readouterr().out
    assert "importance on mlm:wiki vs JS on sst2 (n=8): r=" in stdout
    figure = tmp_path / "corr.svg"
    run("plot", "correlation", out, "--out", figure)
    assert "<svg" in figure.read_text()[:500]
    with pytest.raises(HeadcountError, match="not a drift.json"):
        run("correlate", "--scores", paths[0], "--drift", paths[1], "--out", out)
    with pytest.raises(HeadcountError, match="not a scores.json"):
        run("correlate", "--scores", drift, "--drift", drift, "--out", out)
    with pytest.raises(HeadcountError, match="not a corr.json"):
        run("plot", "correlation", drift, "--out", figure)


def test_importance_and_drift_jobs_feed_the_correlation(tmp_path, glue_dir):
    pre = save_checkpoint(tmp_path / "pre", head="mlm", seed=1)
    fine = save_checkpoint(tmp_path / "fine", seed=2)
    options = DataOptions("sst2", data_dir=str(glue_dir), split="dev", max_examples=6,
                          batch_size=3, max_length=24)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(importance_job(str(fine), options, device="cpu")))
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps(drift_job(str(pre), str(fine), options, device="cpu")))
    record = correlate_job([str(scores)], str(drift))
    entry = record["records"][0]
    assert entry["n"] == 8 and entry["scores_task"] == "sst2"
    assert all(math.isfinite(entry[key]) for key in ("pearson_r", "spearman_rho", "slope"))
    assert -1 <= entry["pearson_r"] <= 1
