"""The study runner: a small study end to end, killed midway and resumed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import WIKITEXT_DIR, out_of_memory_above, save_checkpoint

from headcount.cli.app import main
from headcount.study.config import load_config

pytestmark = pytest.mark.integration

WORDS = ["the movie was good", "a bad film", "it is great fun", "boring story",
         "the acting was terrible", "i love this dog", "not very good", "one cat sat on a mat"]
# Columns that hold wall-clock measurements: they legitimately differ between runs.
TIMINGS = {"seconds", "reference_seconds", "examples_per_second"}


def study_toml(checkpoint: Path, data: Path, name: str = "tiny") -> str:
    return f"""
[study]
name = "{name}"
seeds = [0, 1]
device = "cpu"

[[models]]
name = "tiny"
path = "{checkpoint}"

[[tasks]]
name = "toy"
task = "file:{data}"
text_column = "text"
label_column = "label"

[pretrain]
text = "{WIKITEXT_DIR / 'wiki.valid.tokens'}"
importance_max_examples = 8
curve_max_examples = 8
max_length = 32

[finetune]
epochs = 1
lr = 1e-3
batch_size = 8
max_length = 32
max_steps = 2

[importance]
normalizations = ["l1", "none"]
fraction = "none"
max_examples = 16
batch_size = 8

[pruning]
step = 0.25
max_examples = 16
batch_size = 8

[analyses]
drift_max_examples = 8
freezing = [1]
pruned_finetune = 0.5

[orders]
names = ["random", "top", "non-adjacent"]
draws = 2
finetune = ["importance", "random"]
finetune_ratios = [0.5]

[estimators]
names = ["ablation", "entropy", "confidence", "magnitude"]
max_examples = 8

[sparsity]
levels = [0.0, 0.5, 0.9]
finetune_levels = [0.5]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    checkpoint = save_checkpoint(root / "model", head="mlm")
    data = root / "toy.tsv"
    rows = [f"{WORDS[i % len(WORDS)]}\t{i % 2}" for i in range(24)]
    data.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    config = root / "study.toml"
    config.write_text(study_toml(checkpoint, data))
    return root, config


def read_tables(run: Path) -> dict[str, list[dict]]:
    tables = {}
    for path in sorted((run / "tables").glob("*.csv")):
        with path.open() as file:
            tables[path.stem] = [{k: v for k, v in row.items() if k not in TIMINGS}
                                 for row in csv.DictReader(file)]
    return tables


def run_cli(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "headcount.cli", "study", str(config),
                             "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, config = setup
    out = root / "whole"
    assert main(["study", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def test_the_run_directory_has_tables_figures_and_report(uninterrupted):
    for name in ("config.toml", "environment.json", "report.html", "report.md"):
        assert (uninterrupted / name).is_file(), name
    tables = read_tables(uninterrupted)
    for name in ("finetune", "importance", "curves", "recall", "drift_heads", "drift_layers",
                 "correlation", "freezing", "pruned_finetune"):
        assert tables.get(name), name
        assert (uninterrupted / "tables" / f"{name}.parquet").is_file()
    curves = tables["curves"]
    assert {row["curve"] for row in curves} == {"downstream", "pretrain"}
    assert {row["seed"] for row in curves} == {"0", "1"}
    figures = list((uninterrupted / "figures").glob("*.png"))
    assert figures and all(f.with_suffix(".svg").is_file() for f in figures)


def test_the_companion_studies_are_in_the_tables_and_the_report(uninterrupted):
    tables = read_tables(uninterrupted)
    for name in ("order_curves", "order_finetune", "compensation", "compensation_layers",
                 "compensation_heads", "estimator_scores", "estimator_agreement", "sparsity"):
        assert tables.get(name), name
    orders = tables["order_curves"]
    # random: 2 draws per seed; top and non-adjacent: 1; estimators: one curve each
    curves = {(row["order"], row["seed"], row["draw"]) for row in orders}
    assert {(o, s, d) for o, s, d in curves if o == "random"} == {
        ("random", s, d) for s in ("0", "1") for d in ("0", "1")}
    assert {o for o, _, _ in curves} == {"random", "top", "non-adjacent", "ablation",
                                          "entropy", "confidence", "magnitude"}
    assert {row["order"] for row in tables["order_finetune"]} == {"importance", "random"}
    assert {(row["task"], row["estimator"]) for row in tables["estimator_agreement"]} == {
        (task, e) for task in ("toy", "mlm")
        for e in ("gradient", "entropy", "confidence", "magnitude")}
    settings = {(row["task"], row["setting"]) for row in tables["sparsity"]}
    assert settings == {("mlm", "pre-trained"), ("toy", "pruned before fine-tuning"),
                        ("toy", "pruned after fine-tuning")}
    # the weights pruned before fine-tuning stayed exactly zero through it
    for seed in (0, 1):
        record = json.loads((uninterrupted / "units" / "sparsity" / "tiny" / "toy" /
                             "pretrain-pruned" / "level-0.5" / f"seed-{seed}.json").read_text())
        assert record["sparsity_before_training"] == record["sparsity_after_training"]
        assert abs(record["sparsity_after_training"] - 0.5) < 1e-3
    report = (uninterrupted / "report.md").read_text()
    for title in ("Pruning orders", "Fine-tuning after pruning, and compensation",
                  "Importance estimators against exact ablation",
                  "Weight-magnitude pruning (Gordon et al.)"):
        assert title in report
    assert "Report warnings" not in report


def test_a_killed_study_resumes_to_the_same_result(setup, uninterrupted):
    root, config = setup
    out = root / "killed"
    process = run_cli(config, out)
    # Kill it as soon as some units are finished and a curve is part-way.
    deadline = time.time() + 240
    while time.time() < deadline:
        curves = list((out / "units" / "curves").rglob("seed-*.json")) if out.exists() else []
        if curves:
            break
        if process.poll() is not None:
            pytest.fail(f"the study ended before it could be killed: {process.stderr.read()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "report.html").exists()
    finished = {p for p in (out / "units").rglob("*") if p.is_file()}
    assert finished, "nothing was saved before the kill"
    resumed = run_cli(config, out)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "already done" in err
    assert read_tables(out) == read_tables(uninterrupted)


def test_a_run_directory_of_another_config_is_refused_unless_forced(setup, uninterrupted,
                                                                    capsys, tmp_path):
    root, config = setup
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace('name = "tiny"\nseeds', 'name = "x"\nseeds'))
    assert main(["study", str(other), "--out", str(uninterrupted), "--quiet"]) == 2
    assert "different configuration" in capsys.readouterr().err
    # a run of the same config in the same directory has nothing left to do
    started = time.perf_counter()
    assert main(["study", str(config), "--out", str(uninterrupted), "--quiet"]) == 0
    assert time.perf_counter() - started < 60


def test_force_starts_afresh_only_in_a_headcount_run_directory(setup, tmp_path):
    from headcount.errors import HeadcountError
    from headcount.study.config import load_config
    from headcount.study.rundir import prepare_run_dir

    _, config_path = setup
    config = load_config(config_path)
    other = load_config(config_path).__class__(**{**config.__dict__, "text": config.text + "#"})
    run = tmp_path / "run"
    prepare_run_dir(config, run, force=False)
    (run / "units").mkdir()
    (run / "units" / "finished.json").write_text("{}")
    with pytest.raises(HeadcountError, match="different configuration"):
        prepare_run_dir(other, run, force=False)
    prepare_run_dir(other, run, force=True)
    assert not (run / "units" / "finished.json").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    for force in (False, True):
        with pytest.raises(HeadcountError, match="not a headcount run directory"):
            prepare_run_dir(config, precious, force=force)
    assert (precious / "thesis.tex").read_text() == "do not delete"


# --------------------------------------------------------------------------- run-directory safety


def snapshot(root: Path) -> dict:
    """Every path under `root` with its size and modification time."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*"))}


def leftovers(root: Path) -> list[Path]:
    """Temporary files (hidden staging files and folders) and the lock under `root`."""
    return [path for path in root.rglob("*")
            if path.name.startswith(".") or path.name == "lock.json"]


def test_a_second_writer_stops_at_once_and_a_killed_writers_lock_is_taken_over(
        setup, uninterrupted, tmp_path, capsys):
    _, config = setup
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from headcount.study.lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(600)",
         str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = snapshot(run)
        for force in ([], ["--force"]):  # --force does not bypass a live lock
            started = time.perf_counter()
            assert main(["study", str(config), "--out", str(run), "--quiet", *force]) == 2
            assert time.perf_counter() - started < 10
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1
            assert f"{run} is being written by another headcount process (pid " \
                   f"{holder.pid} on {socket.gethostname()}, started " in err
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["study", str(config), "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"locked by a process that is no longer running (pid {holder.pid} on" in err
    assert not leftovers(run)


def test_damaged_units_are_reported_and_computed_again(setup, uninterrupted, tmp_path,
                                                       capsys):
    _, config = setup
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    units = run / "units"
    curve = units / "curves" / "tiny" / "toy" / "l1" / "seed-0.json"
    curve.write_bytes(curve.read_bytes()[:100])  # cut short: today's JSONDecodeError
    scores = units / "importance" / "tiny" / "toy" / "seed-1.json"
    scores.write_text(scores.read_text().replace('"mean_loss": ', '"mean_loss": 1', 1))
    (units / "finetune" / "tiny" / "toy" / "seed-1" / "model.safetensors").unlink()
    (units / "drift" / "tiny" / "toy" / "seed-0.json").unlink()
    assert main(["study", str(config), "--out", str(run)]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("headcount: note:")]
    assert notes == [
        f"headcount: note: unit units/curves/tiny/toy/l1/seed-0.json is damaged: truncated "
        f"to 100 of {len((uninterrupted / curve.relative_to(run)).read_bytes())} bytes; "
        "computing it again",
        "headcount: note: unit units/drift/tiny/toy/seed-0.json is damaged: missing; "
        "computing it again",
        "headcount: note: unit units/finetune/tiny/toy/seed-1 is damaged: model.safetensors "
        "missing; computing it again",
        "headcount: note: unit units/importance/tiny/toy/seed-1.json is damaged: not matching "
        "its recorded checksum; computing it again",
    ]
    assert "4 units computed (4 damaged, computed again)" in err
    assert read_tables(run) == read_tables(uninterrupted)
    assert main(["study", str(config), "--out", str(run), "--quiet"]) == 0
    assert "damaged" not in capsys.readouterr().err


def test_a_run_directory_of_a_newer_headcount_is_refused(setup, uninterrupted, tmp_path,
                                                          capsys):
    _, config = setup
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    state = json.loads((run / "study.json").read_text())
    (run / "study.json").write_text(json.dumps({**state, "format": 99,
                                                "headcount": "7.0"}))
    before = snapshot(run)
    assert main(["study", str(config), "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"headcount: error: {run} was written by headcount 7.0 "
                          "(run-directory format 99)") and len(err.splitlines()) == 1
    assert snapshot(run) == before


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 240
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the study ended before {what}: {process.stderr.read()[-3000:]}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def ledger_lines(out: Path) -> int:
    ledger = out / "units" / "checksums.jsonl"
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def test_sigterm_and_ctrl_c_stop_cleanly_and_the_study_resumes(setup, uninterrupted):
    root, config = setup
    out = root / "signalled"
    resume = f"resume with: headcount study {config} --out {out}"
    for signum, status, said in ((signal.SIGTERM, 143, "headcount: stopped by SIGTERM"),
                                 (signal.SIGINT, 130, "headcount: interrupted")):
        done = ledger_lines(out)
        process = run_cli(config, out)
        wait_for(lambda done=done: ledger_lines(out) > done + 2, process,
                 "some units were done")
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        assert process.returncode == status, err[-3000:]
        assert said in err and resume in err
        assert not leftovers(out), leftovers(out)
    assert not (out / "report.html").exists()
    resumed = run_cli(config, out)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "damaged" not in err
    assert read_tables(out) == read_tables(uninterrupted)


def assert_close_tables(tables: dict, expected: dict) -> None:
    """The same tables, rows and cells; numbers equal up to floating-point rounding (a
    forward of fewer examples rounds differently; the ablation's differences of close
    losses show it most, at a few 1e-6 relative)."""
    assert tables.keys() == expected.keys()
    for name, rows in expected.items():
        assert len(tables[name]) == len(rows), name
        for row, want in zip(tables[name], rows, strict=True):
            assert row.keys() == want.keys(), name
            for key, value in want.items():
                if row[key] == value:
                    continue
                assert float(row[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-7), (
                    name, key, row[key], value)


def test_out_of_memory_backs_off_and_the_tables_are_the_same(setup, uninterrupted, tmp_path):
    _, config = setup
    out = tmp_path / "small-device"
    # Inference holds 4 of the study's batches of 8 examples; ablation, which runs 4
    # replicas of a batch per forward, 1.
    with out_of_memory_above(4, inference_only=True) as memory:
        assert main(["study", str(config), "--out", str(out), "--quiet"]) == 0
    assert memory.raised and max(memory.ran) == 4
    assert_close_tables(read_tables(out), read_tables(uninterrupted))
    units = out / "units"
    sizes = {
        "curve point": json.loads((units / "curves" / "tiny" / "toy" / "l1" / "seed-0.json")
                                  .read_text())["points"][0]["final_batch_size"],
        "drift": json.loads((units / "drift" / "tiny" / "toy" / "seed-0.json").read_text())[
            "final_batch_size"],
        **{estimator: json.loads((units / "importance-estimators" / "tiny" / "toy" /
                                  estimator / "seed-0.json").read_text())["final_batch_size"]
           for estimator in ("ablation", "entropy", "confidence")},
    }
    assert sizes == {"curve point": 4, "drift": 4, "ablation": 1, "entropy": 4,
                     "confidence": 4}


def test_neuron_curves_and_compression_in_a_study(setup, tmp_path):
    """`[pruning] units = "both"` prunes heads and neurons in the curves (recall, which
    compares sets of heads, is skipped with a note); `[compress]` adds a compression table
    with every method at each budget, within its FLOPs budget."""
    root, config = setup
    text = config.read_text().split("[orders]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace("[pruning]\n", '[pruning]\nunits = "both"\n')
    text += "\n[compress]\nbudgets = [0.5]\nseq_length = 16\nmax_examples = 16\nbatch_size = 8\n"
    both = tmp_path / "both.toml"
    both.write_text(text)
    assert main(["study", str(both), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    tables = read_tables(tmp_path / "run")
    curves = tables["curves"]
    assert {row["units"] for row in curves} == {"both"}
    assert any(int(row["neurons_remaining"]) < int(curves[0]["neurons_remaining"])
               for row in curves)
    assert "recall" not in tables
    rows = tables["compress"]
    assert {row["method"] for row in rows} == {"unpruned", "heads-only", "search", "compress",
                                               "compress-batch"}
    for row in rows:
        if row["method"] in ("search", "compress", "compress-batch"):
            assert float(row["flops_kept"]) <= 0.5 + 1e-9
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Compression to a FLOPs budget" in report and "recall (Eq. 5)" in report
    # The plan lists the compression unit and finds it, with every other unit, done.
    from headcount.study.outline import plan_text

    plan = plan_text(load_config(both), tmp_path / "run")
    assert "compressed to 1 FLOPs budget(s), 4 methods" in plan
    assert " 0 partly done" in plan and "not started" not in plan
    assert not [line for line in plan.splitlines() if line.startswith("-  ")]
