"""The `headcount` command line, run in-process through `headcount.cli.main`.

Every run uses copies of conftest's tiny checkpoints (with a tokenizer that knows its words),
a few examples, --max-length 32 and the CPU.
User mistakes must end with exit status 2, one `headcount: error:` line naming the bad
value, no traceback and no output file.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import WIKITEXT_DIR, write_tokenizer
from transformers import GPT2Config, GPT2Model

from headcount.cli import main, one_line_warning
from headcount.errors import DataError

WIKI_VALID = WIKITEXT_DIR / "wiki.valid.tokens"
FAST = ["--max-length", "32", "--batch-size", "4", "--device", "cpu", "--quiet"]
SUPPORTED_LIST = ("bert, roberta, xlm-roberta, electra, distilbert, albert, deberta, "
                  "deberta-v2, modernbert, mpnet, and any encoder whose layers have BERT's "
                  "layout")

needs_wikitext = pytest.mark.skipif(not WIKI_VALID.is_file(), reason="no WikiText-2 data")


@pytest.fixture(autouse=True)
def _restore_warning_format(monkeypatch):
    """main() installs a one-line warning format; undo it after each test."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def importance(capsys, model, task, out, *extra):
    code, stdout, stderr = run(capsys, "importance", model, "--task", task, "--out", out,
                               *FAST, *extra)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return json.loads(Path(out).read_text()), stdout, stderr


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TEXTS = ["the movie was good", "a bad film", "it is great fun", "boring story",
         "the acting was terrible", "i love this dog", "not very good", "one cat sat on a mat"]


def text_rows(count: int, labels) -> list[list]:
    return [[TEXTS[i % len(TEXTS)], TEXTS[(i + 3) % len(TEXTS)], labels[i % len(labels)]]
            for i in range(count)]


MNLI_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
               "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label").split()


def write_mnli(root: Path) -> Path:
    labels = ["entailment", "neutral", "contradiction"]
    rows = [[i, i, i, "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", TEXTS[i % 8],
             TEXTS[(i + 1) % 8], labels[i % 3], labels[i % 3]] for i in range(12)]
    (root / "MNLI").mkdir(parents=True)
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        write_tsv(root / "MNLI" / name, MNLI_HEADER, rows)
    return root


@pytest.fixture(scope="module")
def ckpts(checkpoints) -> dict[str, Path]:
    return checkpoints


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=128)).save_pretrained(directory)
    write_tokenizer(directory)
    return directory


# --------------------------------------------------------------------------- importance


@pytest.mark.parametrize("method", ["l1", "l2", "none"])
def test_importance_on_sst2_writes_scores_json(capsys, ckpts, glue_dir, tmp_path, method):
    out = tmp_path / "scores.json"
    split = ["--split", "dev"] if method != "l1" else []  # the default split is train
    record, stdout, _ = importance(capsys, ckpts["cls2"], "sst2", out, "--data-dir",
                                  glue_dir, "--max-examples", 12, "--normalize", method, *split)
    for key in ("model", "task", "split", "num_examples", "normalize", "layers", "heads",
                "raw_scores", "scores", "versions"):
        assert key in record
    assert record["model"] == str(ckpts["cls2"])
    assert record["task"] == "sst2"
    assert record["split"] == ("train" if method == "l1" else "dev")
    assert record["num_examples"] == 12
    assert record["normalize"] == method
    assert (record["layers"], record["heads"]) == (2, 4)
    assert record["shared_across_layers"] is False
    assert record["new_head"] is False
    assert {"headcount", "torch", "transformers"} <= set(record["versions"])
    raw = torch.tensor(record["raw_scores"])
    scores = torch.tensor(record["scores"])
    assert raw.shape == scores.shape == (2, 4)
    assert torch.all(raw > 0)
    if method == "l1":
        torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))
        torch.testing.assert_close(scores, raw / raw.sum(dim=1, keepdim=True))
    elif method == "l2":
        torch.testing.assert_close(scores.norm(dim=1), torch.ones(2))
        torch.testing.assert_close(scores, raw / raw.norm(dim=1, keepdim=True))
    else:
        assert record["scores"] == record["raw_scores"]
    assert "2x4 heads over 12 examples" in stdout and str(out) in stdout


def test_score_table_on_stderr_without_quiet(capsys, ckpts, glue_dir, tmp_path):
    out = tmp_path / "scores.json"
    code, _, err = run(capsys, "importance", ckpts["cls2"], "--task", "sst2",
                       "--data-dir", glue_dir, "--split", "dev", "--max-examples", 8,
                       "--max-length", 32, "--batch-size", 4, "--device", "cpu", "--out", out)
    assert code == 0
    assert "l1-normalised importance" in err
    assert re.search(r"L0\s+[\d.]+ ", err) and re.search(r"L1\s+[\d.]+ ", err)


@needs_wikitext
@pytest.mark.parametrize("name, rows", [("mlm", 2), ("albert-mlm", 1)])
def test_importance_on_masked_lm(capsys, ckpts, tmp_path, name, rows):
    record, _, _ = importance(capsys, ckpts[name], f"mlm:{WIKI_VALID}",
                              tmp_path / "scores.json", "--max-examples", 8)
    _check_mlm_record(record, rows)


def _check_mlm_record(record: dict, rows: int) -> None:
    assert record["num_examples"] == 8
    assert record["label_mapping"] == "masked tokens"
    assert record["shared_across_layers"] is (rows == 1)
    assert (record["layers"], record["heads"]) == (rows, 4)
    assert len(record["raw_scores"]) == rows
    assert all(len(row) == 4 for row in record["raw_scores"])
    if rows == 1:
        assert record["num_layer_applications"] == 3
    assert math.isfinite(record["mean_loss"]) and record["mean_loss"] > 0
    torch.testing.assert_close(torch.tensor(record["scores"]).sum(dim=1), torch.ones(rows))


@needs_wikitext
def test_albert_score_table_has_one_shared_row(capsys, ckpts, tmp_path):
    code, _, err = run(capsys, "importance", ckpts["albert-mlm"], "--task", f"mlm:{WIKI_VALID}",
                       "--out", tmp_path / "scores.json", "--max-examples", 8, "--max-length",
                       32, "--batch-size", 4, "--device", "cpu")
    assert code == 0, err
    assert re.search(r"shared\s+[\d.]+ ", err)  # the score table's one row


def test_downstream_task_on_masked_lm_checkpoint_adds_random_head(capsys, ckpts,
                                                                 glue_dir, tmp_path,
                                                                 monkeypatch):
    # Let the warning reach stderr as it does outside pytest (pytest records warnings).
    monkeypatch.setattr(warnings, "showwarning",
                        lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename,
                                                                lineno, line)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        record, _, err = importance(capsys, ckpts["mlm"], "rte", tmp_path / "s.json",
                                    "--data-dir", glue_dir, "--split", "dev",
                                    "--max-examples", 8)
    assert record["new_head"] is True
    assert record["task"] == "rte"
    assert (record["layers"], record["heads"]) == (2, 4)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("headcount: warning:")
    assert "no trained classification head" in lines[0]
    assert str(ckpts["mlm"]) in lines[0]


def test_random_head_is_seeded(capsys, ckpts, glue_dir, tmp_path):
    args = ("--data-dir", glue_dir, "--split", "dev", "--max-examples", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, _, _ = importance(capsys, ckpts["mlm"], "rte", tmp_path / "a.json", *args)
        second, _, _ = importance(capsys, ckpts["mlm"], "rte", tmp_path / "b.json", *args)
    assert first["raw_scores"] == second["raw_scores"]


# --------------------------------------------------------------------------- evaluate


def _metrics_line(stdout: str) -> dict[str, float]:
    line = stdout.strip().splitlines()[-1]
    return {name: float(value) for name, value in re.findall(r"(\w+)=(-?[\d.]+)", line)}


@pytest.mark.parametrize("task, model, names", [
    ("mrpc", "cls2", ["accuracy", "f1", "accuracy_f1"]),
    ("stsb", "regression", ["pearson", "spearman", "pearson_spearman"]),
    ("cola", "cls2", ["mcc"]),
])
def test_evaluate_prints_and_writes_metrics(capsys, ckpts, glue_dir, tmp_path, task,
                                            model, names):
    out = tmp_path / "metrics.json"
    code, stdout, err = run(capsys, "evaluate", ckpts[model], "--task", task,
                            "--data-dir", glue_dir, "--max-examples", 40, "--out", out, *FAST)
    assert code == 0, err
    printed = _metrics_line(stdout)
    assert stdout.startswith(f"{task} dev (40 examples):")
    assert list(printed) == names
    record = json.loads(out.read_text())
    assert list(record["metrics"]) == names
    assert record["num_examples"] == 40 and record["split"] == "dev"
    for name in names:
        assert printed[name] == pytest.approx(record["metrics"][name], abs=1e-4)
    if task == "mrpc":
        assert 0 <= printed["accuracy"] <= 1
        assert printed["accuracy_f1"] == pytest.approx(
            (printed["accuracy"] + printed["f1"]) / 2, abs=2e-4)
    if task == "stsb":
        assert record["label_mapping"] == "regression"


def test_evaluate_without_out_writes_nothing(capsys, ckpts, glue_dir, tmp_path,
                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "evaluate", ckpts["cls2"], "--task", "sst2",
                          "--data-dir", glue_dir, "--max-examples", 16, *FAST)
    assert code == 0
    assert "accuracy=" in stdout
    assert list(tmp_path.iterdir()) == []


def test_evaluate_mnli_on_three_label_model(capsys, ckpts, tmp_path):
    write_mnli(tmp_path / "glue")
    code, stdout, err = run(capsys, "evaluate", ckpts["cls3"], "--task", "mnli",
                            "--data-dir", tmp_path / "glue", "--split", "dev_matched", *FAST)
    assert code == 0, err
    assert stdout.startswith("mnli dev_matched (12 examples): accuracy=")


# --------------------------------------------------------------------------- subsets


def test_same_seed_gives_identical_scores(capsys, ckpts, glue_dir, tmp_path):
    args = ("--data-dir", glue_dir, "--split", "dev", "--max-examples", 8)
    a, _, _ = importance(capsys, ckpts["cls2"], "sst2", tmp_path / "a.json", *args,
                         "--seed", 3)
    b, _, _ = importance(capsys, ckpts["cls2"], "sst2", tmp_path / "b.json", *args,
                         "--seed", 3, "--batch-size", 8)  # batch size does not matter
    c, _, _ = importance(capsys, ckpts["cls2"], "sst2", tmp_path / "c.json", *args,
                         "--seed", 4)
    torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]))
    assert a["raw_scores"] != c["raw_scores"]  # another seed, another subset


@pytest.fixture
def twenty_rows(tmp_path) -> Path:
    return write_tsv(tmp_path / "data.tsv", ["text", "pair", "label"],
                     text_rows(20, ["pos", "neg"]))


@pytest.mark.parametrize("options, expected", [
    (["--fraction", "0.5"], 10),
    (["--fraction", "1.0"], 20),
    (["--max-examples", "7"], 7),
    (["--max-examples", "500"], 20),
    (["--fraction", "0.5", "--max-examples", "4"], 4),
    ([], 20),
])
def test_fraction_and_max_examples_select_counts(capsys, ckpts, twenty_rows, tmp_path,
                                                 options, expected):
    code, stdout, err = run(capsys, "evaluate", ckpts["cls2"], "--task",
                            f"file:{twenty_rows}", "--text-column", "text", "--label-column",
                            "label", "--out", tmp_path / "m.json", *FAST, *options)
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["num_examples"] == expected
    assert f"({expected} examples)" in stdout


# --------------------------------------------------------------------------- local files


def test_file_task_tsv_with_pair_and_string_labels(capsys, ckpts, tmp_path):
    path = write_tsv(tmp_path / "data.tsv", ["sentence", "other", "gold"],
                     text_rows(10, ["pos", "neg"]))
    record, _, _ = importance(capsys, ckpts["cls2"], f"file:{path}", tmp_path / "s.json",
                              "--text-column", "sentence", "--text-pair-column", "other",
                              "--label-column", "gold")
    assert record["num_examples"] == 10
    assert record["label_mapping"] == "sorted label values (neg=0, pos=1)"
    assert (record["layers"], record["heads"]) == (2, 4)


def test_file_task_csv_with_integer_labels(capsys, ckpts, tmp_path):
    path = tmp_path / "data.csv"
    lines = ["label,review"] + [f"{i % 2},\"{TEXTS[i % 8]}, really\"" for i in range(9)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    record, _, _ = importance(capsys, ckpts["cls2"], f"file:{path}", tmp_path / "s.json",
                              "--text-column", "review", "--label-column", "label")
    assert record["num_examples"] == 9
    assert record["label_mapping"] == "integer ids"


def test_file_task_jsonl_with_pair(capsys, ckpts, tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"q": TEXTS[i % 8], "a": TEXTS[(i + 1) % 8], "y": i % 2, "extra": [1]}
            for i in range(11)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    record, _, _ = importance(capsys, ckpts["cls2"], f"file:{path}", tmp_path / "s.json",
                              "--text-column", "q", "--text-pair-column", "a",
                              "--label-column", "y", "--split", "dev")  # split ignored
    assert record["num_examples"] == 11
    assert record["label_mapping"] == "integer ids"


def test_file_task_regression_on_one_output_head(capsys, ckpts, tmp_path):
    path = tmp_path / "scores.jsonl"
    rows = [{"text": TEXTS[i % 8], "score": 0.5 * i} for i in range(12)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    code, stdout, err = run(capsys, "evaluate", ckpts["regression"], "--task",
                            f"file:{path}", "--text-column", "text", "--label-column", "score",
                            *FAST)
    assert code == 0, err
    assert list(_metrics_line(stdout)) == ["pearson", "spearman", "pearson_spearman"]


def test_file_task_with_nan_regression_label_is_refused(capsys, ckpts, tmp_path):
    path = write_tsv(tmp_path / "scores.tsv", ["text", "score"],
                     [["the movie", "nan"], ["a bad film", 1.5], ["good fun", 2]])
    out = tmp_path / "out.json"
    code, _, err = run(capsys, "importance", ckpts["regression"], "--task", f"file:{path}",
                       "--text-column", "text", "--label-column", "score", "--out", out, *FAST)
    assert code == 2 and err.startswith("headcount: error:") and "nan" in err
    assert not out.exists()


# --------------------------------------------------------------------------- bad input


def _five_labels(env):
    path = write_tsv(env.tmp / "five.tsv", ["text", "label"],
                     [[TEXTS[i % 8], i % 5] for i in range(10)])
    return ["importance", env.ckpt["cls2"], "--task", f"file:{path}", "--text-column", "text",
            "--label-column", "label"]


def _ten_rows(env):
    path = write_tsv(env.tmp / "ten.tsv", ["text", "label"],
                     [[TEXTS[i % 8], i % 2] for i in range(10)])
    return ["importance", env.ckpt["cls2"], "--task", f"file:{path}", "--text-column", "text",
            "--label-column", "label", "--fraction", "0.01"]


def _mnli_on_cls2(env):
    write_mnli(env.tmp / "glue")
    return ["importance", env.ckpt["cls2"], "--task", "mnli", "--data-dir", env.tmp / "glue"]


def _empty_glue(env):
    (env.tmp / "glue" / "SST-2").mkdir(parents=True)
    return ["importance", env.ckpt["cls2"], "--task", "sst2", "--data-dir", env.tmp / "glue"]


def _missing_column(env):
    path = write_tsv(env.tmp / "data.tsv", ["text", "label"], [["good", 1], ["bad", 0]])
    return ["importance", env.ckpt["cls2"], "--task", f"file:{path}", "--text-column", "text",
            "--label-column", "gold_label"]


def _sst2(env, *extra, command="importance", model="cls2"):
    return [command, env.ckpt[model], "--task", "sst2", "--data-dir", env.glue,
            "--split", "dev", *extra]


BAD_INPUTS = {
    # name: (argv builder, substrings of the error line)
    "unknown task": (lambda env: ["importance", env.ckpt["cls2"], "--task", "sst-2",
                                  "--data-dir", env.glue],
                     ["'sst-2'", "Did you mean: sst2"]),
    "unknown task (evaluate)": (lambda env: ["evaluate", env.ckpt["cls2"], "--task", "rtee"],
                                ["'rtee'", "Did you mean: rte"]),
    "unknown architecture": (lambda env: ["importance", env.gpt2, "--task", "sst2",
                                          "--data-dir", env.glue],
                             ["gpt2", SUPPORTED_LIST]),
    "missing model directory": (lambda env: _sst2(env, model="missing"),
                                ["./does/not/exist"]),
    "missing data directory": (lambda env: ["importance", env.ckpt["cls2"], "--task", "sst2",
                                            "--data-dir", env.tmp / "no-glue"],
                               ["no-glue"]),
    "missing GLUE file": (_empty_glue, ["SST-2/train.tsv"]),
    "missing local file": (lambda env: ["importance", env.ckpt["cls2"], "--task",
                                        f"file:{env.tmp / 'nope.csv'}", "--text-column", "t",
                                        "--label-column", "l"],
                           ["nope.csv"]),
    "missing column": (_missing_column, ["'gold_label'"]),
    "file task without label column": (lambda env: ["importance", env.ckpt["cls2"], "--task",
                                                    "file:x.tsv", "--text-column", "t"],
                                       ["file:x.tsv", "--label-column"]),
    "unsupported file extension": (lambda env: ["importance", env.ckpt["cls2"], "--task",
                                                f"file:{env.tmp / 'data.txt'}",
                                                "--text-column", "t", "--label-column", "l"],
                                   ["data.txt"]),
    "too many label values": (_five_labels, ["5 label values", "2 labels"]),
    "mnli on a 2-label head": (_mnli_on_cls2, ["mnli has 3 labels", "has 2"]),
    "regression task on a 2-label head": (
        lambda env: ["importance", env.ckpt["cls2"], "--task", "stsb", "--data-dir", env.glue,
                     "--split", "dev"],
        ["stsb", "regression", "2 outputs"]),
    "no data left after --fraction": (_ten_rows, ["no examples left", "fraction=0.01"]),
    "max length beyond positions": (lambda env: _sst2(env, "--max-length", "100000"),
                                    ["--max-length 100000", "64 positions"]),
    "max length too small": (lambda env: _sst2(env, "--max-length", "2", command="evaluate"),
                             ["--max-length 2"]),
    "unknown normalisation": (lambda env: _sst2(env, "--normalize", "l3"), ["'l3'"]),
    "masked LM without MLM head": (lambda env: ["importance", env.ckpt["cls2"], "--task",
                                                f"mlm:{WIKI_VALID}"],
                                   ["no masked-LM head"]),
    "missing masked-LM text": (lambda env: ["importance", env.ckpt["mlm"], "--task",
                                            f"mlm:{env.tmp / 'corpus'}"],
                               ["corpus"]),
    "fraction above 1": (lambda env: _sst2(env, "--fraction", "1.5"), ["--fraction 1.5"]),
    "fraction zero": (lambda env: _sst2(env, "--fraction", "0", command="evaluate"),
                      ["--fraction 0"]),
    "batch size zero": (lambda env: _sst2(env, "--batch-size", "0"), ["--batch-size 0"]),
    "max examples zero": (lambda env: _sst2(env, "--max-examples", "0"),
                          ["--max-examples 0"]),
    "unknown split": (lambda env: _sst2(env, "--split", "test"), ["'test'"]),
    "unknown device": (lambda env: _sst2(env, "--device", "tpu"), ["'tpu'"]),
    "missing output directory": (lambda env: _sst2(env, "--max-examples", "4", "--out",
                                                   env.tmp / "no-dir" / "scores.json"),
                                 ["no-dir"]),
}


@pytest.fixture
def env(ckpts, glue_dir, gpt2_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./does/not/exist is relative to here
    (tmp_path / "out").mkdir()
    return SimpleNamespace(ckpt={**ckpts, "missing": "./does/not/exist"},
                           glue=glue_dir, gpt2=gpt2_checkpoint, tmp=tmp_path,
                           out=tmp_path / "out")


def _run_bad(capsys, env, argv):
    argv = [str(a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(env.out / "result.json")]
    defaults = {"--max-length": "32", "--batch-size": "4", "--device": "cpu"}
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    code, stdout, stderr = run(capsys, *argv, "--quiet")
    return code, stdout, stderr


def _assert_one_error_line(code, stderr, expected):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("headcount: error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line(capsys, env, case):
    build, expected = BAD_INPUTS[case]
    code, stdout, stderr = _run_bad(capsys, env, build(env))
    _assert_one_error_line(code, stderr, expected)
    assert stdout == ""
    assert list(env.out.iterdir()) == []  # no output and no temporary file


def test_out_is_a_directory(capsys, env):
    code, _, stderr = _run_bad(capsys, env, _sst2(env, "--max-examples", "4", "--out",
                                                  env.out))
    _assert_one_error_line(code, stderr, [str(env.out)])
    assert env.out.is_dir() and list(env.out.iterdir()) == []
    assert not [p for p in env.tmp.iterdir() if p.name.endswith(".tmp")]


def test_model_path_is_a_file(capsys, env):
    code, _, stderr = _run_bad(capsys, env, ["importance", env.ckpt["cls2"] / "config.json",
                                             "--task", "sst2", "--data-dir", env.glue])
    _assert_one_error_line(code, stderr, ["config.json"])


@pytest.fixture
def checkpoint_without(ckpts, tmp_path):
    def copy(*missing: str) -> Path:
        target = tmp_path / ("no-" + "-".join(m.split(".")[0] for m in missing))
        target.mkdir()
        for file in ckpts["cls2"].iterdir():
            if not any(file.name.startswith(m) for m in missing):
                (target / file.name).write_bytes(file.read_bytes())
        return target

    return copy


def test_checkpoint_without_weights(capsys, env, checkpoint_without):
    model = checkpoint_without("model.safetensors")
    code, _, stderr = _run_bad(capsys, env, ["importance", model, "--task", "sst2",
                                             "--data-dir", env.glue, "--split", "dev"])
    _assert_one_error_line(code, stderr, [str(model)])


def test_checkpoint_without_tokenizer_is_reported(capsys, env, checkpoint_without):
    model = checkpoint_without("vocab.txt", "tokenizer")
    code, _, stderr = _run_bad(capsys, env, ["evaluate", model, "--task", "sst2",
                                             "--data-dir", env.glue, "--max-examples", "16"])
    # An error or at least a warning must say that there is no usable tokenizer.
    assert "tokenizer" in stderr.lower()


def test_bad_input_as_a_process(tmp_path):
    """The installed entry point: non-zero status and one line, no traceback."""
    script = Path(sys.executable).with_name("headcount")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "headcount.cli"]
    result = subprocess.run(
        [*command, "importance", "model", "--task", "sst-2", "--out", "scores.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("headcount: error:")]
    assert len(result.stderr.splitlines()) == 1
    assert "Did you mean: sst2" in result.stderr
    assert not (tmp_path / "scores.json").exists()


# --------------------------------------------------------------------------- atomic --out


def _sst2_importance(env, out, *extra):
    return ["importance", env.ckpt["cls2"], "--task", "sst2", "--data-dir", env.glue,
            "--split", "dev", "--max-examples", "4", "--out", out, *FAST, *extra]


def test_successful_run_leaves_no_temporary_file(capsys, env):
    out = env.out / "scores.json"
    assert main([str(a) for a in _sst2_importance(env, out)]) == 0
    assert [p.name for p in env.out.iterdir()] == ["scores.json"]
    # Overwriting an existing result also leaves only the result.
    assert main([str(a) for a in _sst2_importance(env, out, "--normalize", "none")]) == 0
    assert [p.name for p in env.out.iterdir()] == ["scores.json"]
    assert json.loads(out.read_text())["normalize"] == "none"


def test_failed_job_keeps_existing_output(capsys, env, monkeypatch):
    import headcount.jobs.prepared

    out = env.out / "scores.json"
    out.write_text("previous result\n")

    def fail(*args, **kwargs):
        raise DataError("failed half-way through")

    monkeypatch.setattr(headcount.jobs.measure, "estimate_for_record", fail)
    code, _, stderr = run(capsys, *_sst2_importance(env, out))
    assert code == 2
    assert stderr == "headcount: error: failed half-way through\n"
    assert out.read_text() == "previous result\n"
    assert [p.name for p in env.out.iterdir()] == ["scores.json"]


def test_interrupted_write_keeps_existing_output(capsys, env, monkeypatch):
    import headcount.io

    out = env.out / "scores.json"
    out.write_text("previous result\n")
    real_replace = os.replace

    def interrupted(source, target):
        if str(source).endswith(".tmp"):
            assert Path(source).read_text().startswith("{")  # the whole record was written
            raise KeyboardInterrupt
        return real_replace(source, target)

    monkeypatch.setattr(headcount.io.os, "replace", interrupted)
    code, _, stderr = run(capsys, *_sst2_importance(env, out))
    assert code == 130
    assert stderr == "headcount: interrupted\n"
    assert out.read_text() == "previous result\n"
    assert [p.name for p in env.out.iterdir()] == ["scores.json"]


def test_failed_write_removes_temporary_file(capsys, env, monkeypatch):
    import headcount.io

    out = env.out / "scores.json"

    def no_space(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(headcount.io.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        main([str(a) for a in _sst2_importance(env, out)])
    assert list(env.out.iterdir()) == []


def test_output_file_mode_follows_umask(capsys, env):
    out = env.out / "scores.json"
    assert main([str(a) for a in _sst2_importance(env, out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- help


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "importance" in out and "evaluate" in out


@pytest.mark.parametrize("command", ["importance", "evaluate"])
def test_command_help_exits_zero(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--task", "--data-dir", "--max-examples", "--fraction", "--out"):
        assert flag in out
    if command == "importance":
        assert "--normalize" in out


def test_one_line_warning_format():
    line = one_line_warning(UserWarning("a\tb"), UserWarning, "x.py", 3)
    assert line == "headcount: warning: a\tb\n"
