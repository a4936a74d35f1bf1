"""The `curve`, `prune` and `plot curve` commands, run in-process through `headcount.cli.main`.

Every run uses conftest's tiny checkpoints (2 layers x 4 heads; ALBERT: one shared layer of
4 heads), a few examples, --max-length 32 and the CPU. Ranking data is capped with
--rank-max-examples: the rank split defaults to the whole training split.
User mistakes end with exit status 2, one `headcount: error:` line, no traceback and no
output left behind.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import WIKITEXT_DIR, write_tokenizer
from transformers import AutoModelForSequenceClassification, BertConfig

from headcount.cli import main

WIKI_VALID = WIKITEXT_DIR / "wiki.valid.tokens"
MLM_TASK = f"mlm:{WIKI_VALID}"
FAST = ["--max-length", "32", "--batch-size", "8", "--device", "cpu", "--quiet"]
N = 24  # examples evaluated and examples ranked on
RANK = ["--rank-split", "train", "--rank-max-examples", str(N)]
COLUMNS = ["model", "task", "rank_task", "normalize", "schedule", "seed", "ratio_requested",
           "ratio_pruned", "heads_remaining", "metric", "value", "relative", "main",
           "pruned_heads", "order", "draw", "units", "neurons_remaining"]
DEFAULT_RATIOS = [round(i / 10, 10) for i in range(11)]

needs_wikitext = pytest.mark.skipif(not WIKI_VALID.is_file(), reason="no WikiText-2 data")


@pytest.fixture(autouse=True)
def _restore_warning_format(monkeypatch):
    """main() installs a one-line warning format; undo it after each test."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


def run(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no trained classification head" of random heads
        code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "Traceback" not in err
    return out


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def heads_of(row: dict) -> list[str]:
    return row["pruned_heads"].split()


def named(removed: list[list[int]]) -> list[str]:
    """'layer.head' names, sorted, of heads.json's `removed` lists."""
    return sorted(f"{layer}.{head}" for layer, heads in enumerate(removed) for head in heads)


def sst2(glue_dir, *extra) -> list:
    return ["--task", "sst2", "--data-dir", glue_dir, "--split", "dev", "--max-examples", N,
            *extra]


def curve(capsys, model, out, *args) -> list[dict]:
    stdout = ok(capsys, "curve", model, *args, *FAST, "--out", out)
    rows = read_csv(out)
    assert f"wrote {len(rows)} rows to {out}" in stdout
    return rows


def sst2_curve(capsys, model, glue_dir, out, *extra) -> list[dict]:
    return curve(capsys, model, out, *sst2(glue_dir), *RANK, *extra)


def assert_one_error_line(code, stderr, *expected):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("headcount: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])


# --------------------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def shared(checkpoints, glue_dir, tmp_path_factory):
    """scores.json files from `headcount importance` and pruned checkpoints from `prune`."""
    root = tmp_path_factory.mktemp("pruning")

    def call(*argv):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main([str(arg) for arg in argv]) == 0, argv

    # The examples the curves rank on: N of the train split drawn with seed 0.
    scores = root / "scores.json"
    call("importance", checkpoints["cls2"], "--task", "sst2", "--data-dir", glue_dir,
         "--split", "train", "--max-examples", N, *FAST, "--out", scores)
    albert_scores = root / "albert-scores.json"
    call("importance", checkpoints["albert-cls2"], "--task", "sst2", "--data-dir", glue_dir,
         "--split", "train", "--max-examples", N, *FAST, "--out", albert_scores)
    half = root / "pruned-half"
    call("prune", checkpoints["cls2"], "--scores", scores, "--ratio", 0.5, "--out", half)
    three = root / "pruned-three"
    call("prune", checkpoints["cls2"], "--scores", scores, "--heads", 3, "--out", three)
    return {"root": root, "scores": scores, "albert_scores": albert_scores, "half": half,
            "three": three}


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory) -> Path:
    """2 layers x 10 heads: 20 heads, so that every default 10% step prunes 2 more heads."""
    directory = tmp_path_factory.mktemp("wide")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=128, hidden_size=40, num_hidden_layers=2,
                        num_attention_heads=10, intermediate_size=37,
                        max_position_embeddings=64, initializer_range=0.3, pad_token_id=0)
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(directory)
    write_tokenizer(directory)
    return directory


# --------------------------------------------------------------------------- curve


def check_curve(rows: list[dict], total: int, *, relative: bool = True) -> None:
    """Invariants of a one-metric curve of a model with `total` heads, nothing pruned yet.
    `relative=False` skips `relative`, which is NaN when the unpruned value is 0."""
    assert rows[0]["ratio_requested"] == rows[0]["ratio_pruned"] == "0.0"
    if relative:
        assert float(rows[0]["relative"]) == 1.0
    assert int(rows[0]["heads_remaining"]) == total
    assert rows[0]["pruned_heads"] == ""
    remaining = [int(row["heads_remaining"]) for row in rows]
    assert all(a > b for a, b in pairwise(remaining)), remaining
    for previous, row in pairwise(rows):
        before, after = heads_of(previous), heads_of(row)
        assert after[:len(before)] == before and len(after) > len(before)
        assert len(set(after)) == len(after)
    for row in rows:
        assert len(heads_of(row)) == total - int(row["heads_remaining"])
        assert float(row["ratio_pruned"]) == pytest.approx(len(heads_of(row)) / total)
        if relative:
            assert float(row["relative"]) == pytest.approx(
                float(row["value"]) / float(rows[0]["value"]))
        assert row["main"] == "True"


def test_curve_default_steps(capsys, checkpoints, glue_dir, tmp_path):
    out = tmp_path / "curve.csv"
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], *sst2(glue_dir), *RANK,
                            *FAST, "--out", out)
    assert code == 0, err
    assert err == ""
    with out.open(newline="") as file:
        assert next(csv.reader(file)) == COLUMNS
    rows = read_csv(out)
    check_curve(rows, 8)
    requested = [float(row["ratio_requested"]) for row in rows]
    # Default 10% steps of 8 heads: steps pruning the same number of heads appear once.
    assert requested[0] == 0.0 and requested[-1] == 1.0
    assert set(requested) <= set(DEFAULT_RATIOS)
    assert [int(row["heads_remaining"]) for row in rows] == list(range(8, -1, -1))
    for row in rows:
        assert round(float(row["ratio_requested"]) * 8) == 8 - int(row["heads_remaining"])
        assert row["model"] == str(checkpoints["cls2"])
        assert (row["task"], row["rank_task"], row["normalize"]) == ("sst2", "sst2", "l1")
        assert (row["schedule"], row["seed"], row["metric"]) == ("one-shot", "0", "accuracy")
        assert 0 <= float(row["value"]) <= 1
    assert rows[-1]["ratio_pruned"] == "1.0"
    assert sorted(heads_of(rows[-1])) == [f"{layer}.{h}" for layer in range(2) for h in range(4)]
    # one stdout line per row, then the summary
    lines = stdout.splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[0].startswith("0.000 pruned,    8 heads left: accuracy=")


def test_curve_has_eleven_default_steps(capsys, wide_checkpoint, glue_dir, tmp_path):
    rows = curve(capsys, wide_checkpoint, tmp_path / "curve.csv", *sst2(glue_dir), *RANK)
    assert len(rows) == 11
    assert [float(row["ratio_requested"]) for row in rows] == DEFAULT_RATIOS
    assert [int(row["heads_remaining"]) for row in rows] == list(range(20, -1, -2))
    check_curve(rows, 20)


def test_explicit_ratios_add_ratio_zero(capsys, checkpoints, glue_dir, tmp_path):
    rows = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "c.csv",
                      "--ratios", 0.5)
    assert [row["ratio_requested"] for row in rows] == ["0.0", "0.5"]
    assert [int(row["heads_remaining"]) for row in rows] == [8, 4]
    check_curve(rows, 8)


def test_step_option(capsys, checkpoints, glue_dir, tmp_path):
    rows = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "c.csv",
                      "--step", 0.25)
    assert [float(row["ratio_requested"]) for row in rows] == [0, 0.25, 0.5, 0.75, 1]
    assert [int(row["heads_remaining"]) for row in rows] == [8, 6, 4, 2, 0]
    check_curve(rows, 8)


def test_scores_file_gives_the_same_curve_as_ranking_on_the_fly(capsys, checkpoints,
                                                                 glue_dir, shared, tmp_path):
    on_the_fly = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "a.csv")
    from_file = curve(capsys, checkpoints["cls2"], tmp_path / "b.csv", *sst2(glue_dir),
                      "--scores", shared["scores"])
    assert all(row["rank_task"] == "scores:sst2" for row in from_file)
    strip = [{k: v for k, v in row.items() if k != "rank_task"} for row in on_the_fly]
    assert [{k: v for k, v in row.items() if k != "rank_task"} for row in from_file] == strip


def test_masked_curve_equals_physical_removal(capsys, checkpoints, glue_dir, tmp_path):
    physical = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "p.csv")
    masked = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "m.csv", "--masked")
    assert len(masked) == len(physical)
    for a, b in zip(physical, masked, strict=True):
        for key in ("ratio_requested", "ratio_pruned", "heads_remaining", "pruned_heads",
                    "normalize", "metric"):
            assert a[key] == b[key], key
        assert float(b["value"]) == pytest.approx(float(a["value"]), abs=1e-6)
        assert float(b["relative"]) == pytest.approx(float(a["relative"]), abs=1e-6)


def test_iterative_schedule_starts_like_one_shot(capsys, checkpoints, glue_dir, tmp_path):
    one_shot = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "o.csv",
                          "--step", 0.25)
    iterative = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "i.csv",
                           "--step", 0.25, "--schedule", "iterative")
    assert all(row["schedule"] == "iterative" for row in iterative)
    check_curve(iterative, 8)
    assert [row["heads_remaining"] for row in iterative] == ["8", "6", "4", "2", "0"]
    assert iterative[0]["value"] == one_shot[0]["value"]
    assert iterative[1]["pruned_heads"] == one_shot[1]["pruned_heads"]
    assert iterative[1]["value"] == one_shot[1]["value"]


def test_keep_one_per_layer(capsys, checkpoints, glue_dir, tmp_path):
    rows = sst2_curve(capsys, checkpoints["cls2"], glue_dir, tmp_path / "c.csv",
                      "--ratios", 1.0, "--keep-one-per-layer")
    assert [int(row["heads_remaining"]) for row in rows] == [8, 2]  # one per layer
    pruned = heads_of(rows[-1])
    for layer in range(2):
        assert sum(head.startswith(f"{layer}.") for head in pruned) == 3


@needs_wikitext
def test_masked_lm_curve(capsys, checkpoints, tmp_path):
    rows = curve(capsys, checkpoints["mlm"], tmp_path / "c.csv", "--task", MLM_TASK,
                 "--max-examples", 16, "--rank-max-examples", 16)
    assert all(row["metric"] == "recall@1" for row in rows)
    assert all(row["task"] == row["rank_task"] == MLM_TASK for row in rows)
    assert [int(row["heads_remaining"]) for row in rows] == list(range(8, -1, -1))
    assert all(0 <= float(row["value"]) <= 1 for row in rows)


@needs_wikitext
def test_albert_default_curve_keeps_a_shared_head(capsys, checkpoints, tmp_path):
    rows = curve(capsys, checkpoints["albert-mlm"], tmp_path / "c.csv", "--task", MLM_TASK,
                 "--max-examples", 16, "--rank-max-examples", 16)
    remaining = [int(row["heads_remaining"]) for row in rows]
    assert remaining[0] == 4 and remaining[-1] == 1, remaining
    assert all(a > b for a, b in pairwise(remaining))
    assert all(head.startswith("0.") for head in heads_of(rows[-1]))


@needs_wikitext
def test_albert_explicit_full_ratio_is_an_error(capsys, checkpoints, tmp_path):
    out = tmp_path / "c.csv"
    code, stdout, err = run(capsys, "curve", checkpoints["albert-mlm"], "--task", MLM_TASK,
                            "--max-examples", 16, "--rank-max-examples", 16, "--ratios", 1.0,
                            *FAST, "--out", out)
    assert_one_error_line(code, err, "ALBERT")
    assert stdout == "" and list(tmp_path.iterdir()) == []


@needs_wikitext
def test_mlm_curve_ranked_by_a_downstream_task(capsys, checkpoints, glue_dir, tmp_path):
    rows = curve(capsys, checkpoints["mlm"], tmp_path / "c.csv", "--task", MLM_TASK,
                 "--max-examples", 16, "--rank-task", "rte", "--data-dir", glue_dir,
                 "--rank-max-examples", 16, "--step", 0.25)
    assert all(row["rank_task"] == "rte" and row["metric"] == "recall@1" for row in rows)
    check_curve(rows, 8, relative=False)  # recall@1 of a random MLM may be 0 unpruned
    assert [int(row["heads_remaining"]) for row in rows] == [8, 6, 4, 2, 0]


@needs_wikitext
def test_downstream_curve_ranked_by_masked_lm(capsys, checkpoints, glue_dir, tmp_path):
    rows = curve(capsys, checkpoints["mlm"], tmp_path / "c.csv", "--task", "rte",
                 "--data-dir", glue_dir, "--split", "dev", "--max-examples", 16,
                 "--rank-task", MLM_TASK, "--rank-max-examples", 16, "--step", 0.25)
    assert all(row["rank_task"] == MLM_TASK and row["metric"] == "accuracy" for row in rows)
    check_curve(rows, 8)
    assert [int(row["heads_remaining"]) for row in rows] == [8, 6, 4, 2, 0]


# --------------------------------------------------------------------------- prune


def test_prune_writes_a_pruned_checkpoint(capsys, checkpoints, glue_dir, shared, tmp_path):
    raw = torch.tensor(json.loads(shared["scores"].read_text())["scores"])
    order = sorted(range(8), key=lambda i: (raw.flatten()[i].item(), i))
    for directory, removed in ((shared["half"], 4), (shared["three"], 3)):
        names = {path.name for path in directory.iterdir()}
        assert {"config.json", "model.safetensors", "heads.json"} <= names
        assert names & {"tokenizer.json", "vocab.txt", "tokenizer_config.json"}
        config = json.loads((directory / "config.json").read_text())
        layout = json.loads((directory / "heads.json").read_text())
        kept = config["headcount_kept_heads"]
        assert kept == layout["kept"]
        assert layout["heads_remaining"] == sum(map(len, kept)) == 8 - removed
        gone = {(layer, head) for layer in range(2) for head in layout["removed"][layer]}
        assert gone == {divmod(i, 4) for i in order[:removed]}  # least important first
        for layer in range(2):
            assert sorted(kept[layer] + layout["removed"][layer]) == [0, 1, 2, 3]
    # the printed summary
    out = tmp_path / "again"
    stdout = ok(capsys, "prune", checkpoints["cls2"], "--scores", shared["scores"],
                "--heads", 3, "--out", out)
    assert stdout.startswith("removed 3 heads (5 left); parameters ")
    assert str(out) in stdout


def test_pruned_checkpoint_matches_the_masked_curve(capsys, checkpoints, glue_dir, shared,
                                                    tmp_path):
    rows = curve(capsys, checkpoints["cls2"], tmp_path / "c.csv", *sst2(glue_dir),
                 "--ratios", 0.5, "--scores", shared["scores"], "--masked")
    metrics = tmp_path / "metrics.json"
    stdout = ok(capsys, "evaluate", shared["half"], *sst2(glue_dir), *FAST, "--out", metrics)
    assert stdout.startswith(f"sst2 dev ({N} examples): accuracy=")
    record = json.loads(metrics.read_text())
    assert record["metrics"]["accuracy"] == pytest.approx(float(rows[1]["value"]), abs=1e-6)
    removed = json.loads((shared["half"] / "heads.json").read_text())["removed"]
    assert sorted(heads_of(rows[1])) == named(removed)


def test_importance_of_pruned_checkpoint_is_zero_for_removed_heads(capsys, glue_dir, shared,
                                                                    tmp_path):
    out = tmp_path / "scores.json"
    ok(capsys, "importance", shared["half"], *sst2(glue_dir), *FAST, "--out", out)
    record = json.loads(out.read_text())
    raw = record["raw_scores"]
    assert (record["layers"], record["heads"]) == (2, 4)
    layout = json.loads((shared["half"] / "heads.json").read_text())
    for layer in range(2):
        for head in layout["removed"][layer]:
            assert raw[layer][head] == 0.0
        for head in layout["kept"][layer]:
            assert raw[layer][head] > 0


def test_curve_of_a_pruned_checkpoint(capsys, glue_dir, shared, tmp_path):
    rows = sst2_curve(capsys, shared["half"], glue_dir, tmp_path / "c.csv", "--step", 0.25)
    # ratios count every head of the original model, the missing ones included
    assert rows[0]["ratio_requested"] == "0.0"
    assert rows[0]["ratio_pruned"] == "0.5" and rows[0]["heads_remaining"] == "4"
    assert rows[-1]["heads_remaining"] == "0" and rows[-1]["ratio_pruned"] == "1.0"
    remaining = [int(row["heads_remaining"]) for row in rows]
    assert remaining == sorted(remaining, reverse=True)
    # the heads the checkpoint lacks count as pruned from the start
    removed = json.loads((shared["half"] / "heads.json").read_text())["removed"]
    assert sorted(heads_of(rows[0])) == named(removed)


def test_layout_not_matching_the_weights_is_one_error_line(capsys, glue_dir, shared,
                                                           tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shared["half"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["headcount_kept_heads"] = [[0, 1, 2, 3], [0, 1, 2, 3]]  # weights have 4 of 8
    (broken / "config.json").write_text(json.dumps(config))
    layer = next(i for i in range(2)
                 if json.loads((shared["half"] / "heads.json").read_text())["removed"][i])
    code, stdout, err = run(capsys, "evaluate", broken, *sst2(glue_dir), *FAST)
    assert_one_error_line(code, err, str(broken), "does not match the weights",
                          f"encoder.layer.{layer}.attention")
    assert stdout == ""


# --------------------------------------------------------------------------- plot


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plot_curve(capsys, checkpoints, glue_dir, shared, tmp_path, suffix):
    a = tmp_path / "a.csv"
    curve(capsys, checkpoints["cls2"], a, *sst2(glue_dir), "--scores", shared["scores"],
          "--step", 0.25)
    b = tmp_path / "b.csv"
    curve(capsys, checkpoints["cls2"], b, *sst2(glue_dir), "--scores", shared["scores"],
          "--step", 0.25, "--normalize", "none", "--seed", 1)
    figure = tmp_path / f"fig.{suffix}"
    stdout = ok(capsys, "plot", "curve", a, b, "--out", figure)
    assert stdout.strip() == f"wrote {figure}"
    data = figure.read_bytes()
    if suffix == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 10_000
    else:
        assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")
        assert len(data) > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.csv", "b.csv", figure.name])


# --------------------------------------------------------------------------- bad inputs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _three_layer_scores(env) -> Path:
    return _write(env["tmp"] / "s.json", json.dumps({"raw_scores": [[1.0] * 4] * 3}))


BAD_CURVES = {
    # name: (extra curve arguments, substrings of the error line)
    "ratio above one": (lambda env: ["--ratios", 1.5], ["1.5"]),
    "negative ratio": (lambda env: ["--ratios", -0.1], ["-0.1"]),
    "zero step": (lambda env: ["--step", 0], ["--step 0"]),
    "scores of another shape": (lambda env: ["--scores", _three_layer_scores(env)],
                                ["[3, 4]", "[2, 4]"]),
    "scores of another family": (lambda env: ["--scores", env["albert_scores"]],
                                 ["another model", "family", "albert", "bert"]),
    "unknown schedule": (lambda env: ["--schedule", "sometimes"], ["sometimes"]),
    "iterative with scores": (lambda env: ["--schedule", "iterative", "--scores",
                                           env["scores"]], ["iterative", "--scores"]),
    "missing scores file": (lambda env: ["--scores", env["tmp"] / "nope.json"],
                            ["not found", "nope.json"]),
    "scores not json": (lambda env: ["--scores", _write(env["tmp"] / "s.json", "raw: 1\n")],
                        ["s.json", "is not JSON"]),
}


@pytest.fixture
def env(shared, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return {**shared, "tmp": tmp_path, "out": out}


@pytest.mark.parametrize("case", list(BAD_CURVES))
def test_bad_curve_input_is_one_error_line(capsys, checkpoints, glue_dir, env, case):
    build, expected = BAD_CURVES[case]
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], *sst2(glue_dir), *RANK,
                            *build(env), *FAST, "--out", env["out"] / "curve.csv")
    assert_one_error_line(code, err, *expected)
    assert stdout == ""
    assert list(env["out"].iterdir()) == []


def test_metric_undefined_on_tiny_evaluation_set(capsys, checkpoints, glue_dir, env):
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], "--task", "cola",
                            "--data-dir", glue_dir, "--split", "dev", "--max-examples", 1,
                            *RANK, *FAST, "--out", env["out"] / "curve.csv")
    assert_one_error_line(code, err, "MCC", "one class")
    assert stdout == "" and list(env["out"].iterdir()) == []


@pytest.mark.parametrize("amount", [[], ["--ratio", "0.5", "--heads", "2"]])
def test_prune_needs_exactly_one_amount(capsys, checkpoints, env, amount):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(checkpoints["cls2"]), "--scores", str(env["scores"]), *amount,
              "--out", str(env["out"] / "pruned")])
    assert exit_info.value.code == 2
    assert list(env["out"].iterdir()) == []


BAD_PRUNES = {
    "ratio above one": (lambda env: ["cls2", "--ratio", 2], ["--ratio 2"]),
    "too many heads": (lambda env: ["cls2", "--heads", 100], ["100", "0..8"]),
    "every ALBERT head": (lambda env: ["albert-cls2", "--ratio", 1.0, "--scores",
                                       env["albert_scores"]], ["ALBERT", "0..3"]),
    "scores of another family": (lambda env: ["cls2", "--heads", 2, "--scores",
                                              env["albert_scores"]], ["family"]),
    "missing scores file": (lambda env: ["cls2", "--heads", 2, "--scores",
                                         env["tmp"] / "nope.json"], ["nope.json"]),
}


@pytest.mark.parametrize("case", list(BAD_PRUNES))
def test_bad_prune_input_is_one_error_line(capsys, checkpoints, env, case):
    build, expected = BAD_PRUNES[case]
    name, *args = build(env)
    if "--scores" not in args:
        args += ["--scores", env["scores"]]
    code, stdout, err = run(capsys, "prune", checkpoints[name], *args,
                            "--out", env["out"] / "pruned")
    assert_one_error_line(code, err, *expected)
    assert stdout == ""
    assert list(env["out"].iterdir()) == []  # no checkpoint and no staging directory


def test_prune_into_a_non_empty_directory(capsys, checkpoints, env):
    target = env["out"] / "pruned"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    code, stdout, err = run(capsys, "prune", checkpoints["cls2"], "--scores", env["scores"],
                            "--heads", 2, "--out", target)
    assert_one_error_line(code, err, str(target), "not an empty directory")
    assert stdout == ""
    assert [p.name for p in env["out"].iterdir()] == ["pruned"]
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_prune_into_an_empty_directory(capsys, checkpoints, env):
    target = env["out"] / "pruned"
    target.mkdir()
    ok(capsys, "prune", checkpoints["cls2"], "--scores", env["scores"], "--heads", 2,
       "--out", target)
    assert (target / "heads.json").is_file()
    assert [p.name for p in env["out"].iterdir()] == ["pruned"]  # no staging left


def test_plot_missing_file(capsys, env):
    figure = env["out"] / "fig.png"
    code, stdout, err = run(capsys, "plot", "curve", env["tmp"] / "nope.csv", "--out", figure)
    assert_one_error_line(code, err, "nope.csv", "not found")
    assert stdout == "" and list(env["out"].iterdir()) == []


def test_plot_csv_that_is_not_a_curve(capsys, env):
    table = _write(env["tmp"] / "table.csv", "a,b\n1,2\n")
    figure = env["out"] / "fig.png"
    code, stdout, err = run(capsys, "plot", "curve", table, "--out", figure)
    assert_one_error_line(code, err, "table.csv", "not a headcount curve")
    assert stdout == "" and list(env["out"].iterdir()) == []


def test_curve_scores_and_rank_task_exclude_each_other(capsys, checkpoints, glue_dir, env):
    with pytest.raises(SystemExit) as exit_info:
        main(["curve", str(checkpoints["cls2"]), *map(str, sst2(glue_dir)), "--scores",
              str(env["scores"]), "--rank-task", "rte", "--out", str(env["out"] / "c.csv")])
    assert exit_info.value.code == 2
    assert list(env["out"].iterdir()) == []


# --------------------------------------------------------------------------- more layouts


@pytest.fixture(scope="module")
def layer_zero_scores(tmp_path_factory) -> Path:
    """Raw, unnormalised scores ranking all of layer 0 below every head of layer 1."""
    path = tmp_path_factory.mktemp("layer0") / "scores.json"
    path.write_text(json.dumps({"raw_scores": [[0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]],
                                "normalize": "none", "task": "handmade"}))
    return path


@pytest.fixture(scope="module")
def empty_layer_checkpoint(checkpoints, layer_zero_scores, tmp_path_factory) -> Path:
    """cls2 with every head of layer 0 removed."""
    out = tmp_path_factory.mktemp("empty-layer") / "pruned"
    assert main(["prune", str(checkpoints["cls2"]), "--scores", str(layer_zero_scores),
                 "--heads", "4", "--out", str(out)]) == 0
    return out


def test_checkpoint_with_an_empty_layer(capsys, checkpoints, glue_dir, layer_zero_scores,
                                        empty_layer_checkpoint, tmp_path):
    layout = json.loads((empty_layer_checkpoint / "heads.json").read_text())
    assert layout["kept"] == [[], [0, 1, 2, 3]]
    rows = curve(capsys, checkpoints["cls2"], tmp_path / "c.csv", *sst2(glue_dir),
                 "--ratios", 0.5, "--scores", layer_zero_scores, "--masked")
    assert rows[1]["pruned_heads"] == "0.0 0.1 0.2 0.3"
    assert all(row["normalize"] == "none" and row["rank_task"] == "scores:handmade"
               for row in rows)
    metrics = tmp_path / "metrics.json"
    ok(capsys, "evaluate", empty_layer_checkpoint, *sst2(glue_dir), *FAST, "--out", metrics)
    accuracy = json.loads(metrics.read_text())["metrics"]["accuracy"]
    assert accuracy == pytest.approx(float(rows[1]["value"]), abs=1e-6)
    scores = tmp_path / "scores.json"
    ok(capsys, "importance", empty_layer_checkpoint, *sst2(glue_dir), *FAST, "--out", scores)
    raw = json.loads(scores.read_text())["raw_scores"]
    assert raw[0] == [0.0] * 4 and all(value > 0 for value in raw[1])


def test_masked_curve_of_a_pruned_checkpoint_equals_physical(capsys, glue_dir,
                                                             empty_layer_checkpoint,
                                                             tmp_path):
    physical = sst2_curve(capsys, empty_layer_checkpoint, glue_dir, tmp_path / "p.csv",
                          "--step", 0.25, "--schedule", "iterative")
    masked = sst2_curve(capsys, empty_layer_checkpoint, glue_dir, tmp_path / "m.csv",
                        "--step", 0.25, "--schedule", "iterative", "--masked")
    assert [r["pruned_heads"] for r in masked] == [r["pruned_heads"] for r in physical]
    for a, b in zip(physical, masked, strict=True):
        assert float(b["value"]) == pytest.approx(float(a["value"]), abs=1e-6)
    assert physical[-1]["heads_remaining"] == "0"


def test_keep_one_per_layer_on_a_checkpoint_with_an_empty_layer(capsys, glue_dir,
                                                                empty_layer_checkpoint,
                                                                tmp_path):
    rows = sst2_curve(capsys, empty_layer_checkpoint, glue_dir, tmp_path / "c.csv",
                      "--ratios", 1.0, "--keep-one-per-layer")
    # layer 0 has no heads left; layer 1 keeps exactly one
    assert rows[-1]["heads_remaining"] == "1"


def test_albert_pruned_checkpoint_matches_the_masked_curve(capsys, checkpoints, glue_dir,
                                                           shared, tmp_path):
    pruned = tmp_path / "pruned"
    stdout = ok(capsys, "prune", checkpoints["albert-cls2"], "--scores",
                shared["albert_scores"], "--ratio", 0.5, "--out", pruned)
    assert stdout.startswith("removed 2 heads (2 left)")
    layout = json.loads((pruned / "heads.json").read_text())
    assert layout["family"] == "albert" and len(layout["kept"]) == 1
    rows = curve(capsys, checkpoints["albert-cls2"], tmp_path / "c.csv", *sst2(glue_dir),
                 "--ratios", 0.5, "--scores", shared["albert_scores"], "--masked")
    metrics = tmp_path / "metrics.json"
    ok(capsys, "evaluate", pruned, *sst2(glue_dir), *FAST, "--out", metrics)
    accuracy = json.loads(metrics.read_text())["metrics"]["accuracy"]
    assert accuracy == pytest.approx(float(rows[1]["value"]), abs=1e-6)
    assert sorted(heads_of(rows[1])) == [f"0.{h}" for h in layout["removed"][0]]


# --------------------------------------------------------------------------- known bugs


def test_scores_with_malformed_architecture_is_one_error_line(capsys, checkpoints, glue_dir,
                                                              env):
    scores = _write(env["tmp"] / "s.json", json.dumps(
        {"raw_scores": [[1.0] * 4] * 2, "architecture": "bert"}))
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], *sst2(glue_dir),
                            "--scores", scores, *FAST, "--out", env["out"] / "c.csv")
    assert_one_error_line(code, err, "s.json")


def test_plot_unsupported_format_is_one_error_line(capsys, shared, env, checkpoints,
                                                   glue_dir):
    table = env["tmp"] / "c.csv"
    curve(capsys, checkpoints["cls2"], table, *sst2(glue_dir), "--scores", shared["scores"],
          "--ratios", 0.5)
    code, stdout, err = run(capsys, "plot", "curve", table, "--out", env["out"] / "fig.txt")
    assert_one_error_line(code, err, "txt")
    assert list(env["out"].iterdir()) == []


def test_plot_without_suffix(capsys, shared, env, checkpoints, glue_dir):
    table = env["tmp"] / "c.csv"
    curve(capsys, checkpoints["cls2"], table, *sst2(glue_dir), "--scores", shared["scores"],
          "--ratios", 0.5)
    figure = env["out"] / "fig"
    code, stdout, err = run(capsys, "plot", "curve", table, "--out", figure)
    if code == 0:  # matplotlib's default format
        assert figure.read_bytes().startswith(b"\x89PNG")
    else:
        assert_one_error_line(code, err, "fig")


def test_one_class_error_names_the_label_plainly(capsys, checkpoints, glue_dir, env):
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], "--task", "cola",
                            "--data-dir", glue_dir, "--split", "dev", "--max-examples", 1,
                            *RANK, *FAST, "--out", env["out"] / "curve.csv")
    assert code == 2
    assert "np." not in err


def test_curve_ranked_by_another_estimator_prunes_in_its_order(capsys, checkpoints, glue_dir,
                                                                tmp_path):
    from headcount.estimators import estimate_importance
    from headcount.importance import normalize
    from headcount.models import load_model
    from headcount.pruning import least_important_first

    rows = curve(capsys, checkpoints["cls2"], tmp_path / "curve.csv", *sst2(glue_dir), *RANK,
                 "--estimator", "magnitude", "--ratios", "0.25", "0.5")
    model = load_model(str(checkpoints["cls2"]), "classification").model
    order = least_important_first(normalize(estimate_importance(model, None, "classification",
                                                                "magnitude").raw, "l1"))
    expected = [f"{layer}.{head}" for layer, head in order]
    assert [heads_of(row) for row in rows] == [[], expected[:2], expected[:4]]
    assert {row["rank_task"] for row in rows} == {"sst2 (magnitude)"}


def test_curve_estimator_needs_ranking_data(capsys, checkpoints, glue_dir, env):
    code, stdout, err = run(capsys, "curve", checkpoints["cls2"], *sst2(glue_dir), "--scores",
                            env["scores"], "--estimator", "ablation", "--out",
                            env["out"] / "c.csv")
    assert_one_error_line(code, err, "--estimator ablation", "scores file")
    assert list(env["out"].iterdir()) == []
