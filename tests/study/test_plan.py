"""`headcount study CONFIG --plan`: the units, which are done, a rough time; nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, WIKITEXT_DIR, save_checkpoint

from headcount.cli.app import main


def plan_lines(capsys, *argv) -> list[str]:
    assert main(["study", *argv, "--plan"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


def summary(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("study "))


def test_glue_local_plans_every_unit_and_a_time(tmp_path, capsys, offline):
    if not (REPO.parent / "shared" / "data" / "glue").is_dir():
        pytest.skip("shared data not beside the repository")
    out = tmp_path / "run"
    lines = plan_lines(capsys, str(REPO / "examples" / "glue-local.toml"), "--out", str(out))
    assert not out.exists()
    units = [line for line in lines[1:] if line.strip() and line.split()[0] == "-"]
    # model x task x seed x analysis, with the fitted masked-LM head first
    assert "fit masked-LM head (200 steps)" in units[0]
    assert any(line.split()[1:4] == ["minilm", "sst2", "1"] and "fine-tune" in line
               for line in units)
    assert f"; {len(units)} units; run directory {out}: not started: 0 done" in summary(lines)
    assert not any(line.endswith(" ?") for line in units)  # every unit timed
    assert any(line.startswith("rough time for the rest: ~") for line in lines)


def test_the_published_study_plans_offline_with_its_hub_names_noted(tmp_path, capsys,
                                                                      offline):
    examples = tmp_path / "examples"
    (examples / "data").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "paper.toml", examples)
    # The Wikipedia text the config's comment says how to get, as a small stand-in.
    shutil.copy(WIKITEXT_DIR / "wiki.valid.tokens", examples / "data" / "wikipedia.txt")
    lines = plan_lines(capsys, str(examples / "paper.toml"), "--out", str(tmp_path / "run"))
    line = summary(lines)
    assert line.startswith("study paper: 2 model(s) x 4 task(s) x 5 seed(s); ")
    models = {line.split()[1] for line in lines[1:] if line.strip() and line[0] in "-y"}
    assert {"roberta-large", "albert-base-v2"} <= models
    # Offline without a hub cache, the hub names and hub GLUE tasks are noted, not timed.
    notes = [line for line in lines if line.startswith("note: ")]
    if any(line.endswith(" ?") for line in lines):
        assert any("hub" in note for note in notes)
    for note in notes:
        assert note.endswith(("its units are listed but not timed",
                              "counted as a model whose layers are distinct"))
    assert not (tmp_path / "run").exists()


def study_file(folder, model: str, task: str, sections: str = "") -> Path:
    """A study config in `folder`: one model, one task (its TOML lines), the masked LM on
    WikiText-2, and `sections`."""
    config = folder / "study.toml"
    config.write_text(f"""
[study]
name = "planned"
device = "cpu"

[[models]]
name = "tiny"
path = "{model}"

[[tasks]]
name = "mine"
{task}

[pretrain]
text = "{WIKITEXT_DIR / 'wiki.valid.tokens'}"
{sections}""")
    return config


FILE_TASK = 'task = "file:{}"\ntext_column = "text"\nlabel_column = "label"'


def test_a_local_model_or_data_that_does_not_load_is_one_error(tmp_path, capsys):
    config = study_file(tmp_path, "./no-such-checkpoint", FILE_TASK.format("missing.tsv"))
    assert main(["study", str(config), "--plan", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headcount: error: 2 problem(s) in the study's models and data:")
    assert f"models tiny: model directory not found: {tmp_path / 'no-such-checkpoint'}" in err
    assert "tasks mine:" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_freezing_more_layers_than_the_model_has_is_found_before_the_run(tmp_path, capsys):
    glue = REPO.parent / "shared" / "data" / "glue"
    if not glue.is_dir():
        pytest.skip("shared data not beside the repository")
    checkpoint = save_checkpoint(tmp_path / "model", head="mlm")  # 2 layers
    config = study_file(tmp_path, checkpoint, f'task = "sst2"\ndata_dir = "{glue}"',
                        "[analyses]\nfreezing = [1, 5]\n")
    assert main(["study", str(config), "--plan", "--out", str(tmp_path / "run")]) == 2
    assert "analyses.freezing: 5 layers, but tiny has 2" in capsys.readouterr().err


SMALL = """importance_max_examples = 4
curve_max_examples = 4
max_length = 16

[finetune]
batch_size = 4
max_length = 16
max_steps = 1

[importance]
normalizations = ["l1"]
max_examples = 4

[pruning]
step = 0.5
max_examples = 4

[analyses]
drift = false
correlation = false
freezing = []
pruned_finetune = "none"
"""


def test_units_done_and_a_run_of_another_config_are_told_apart(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "model", head="mlm")
    data = tmp_path / "toy.tsv"
    data.write_text("text\tlabel\n" + "".join(f"w{i} the movie\t{i % 2}\n" for i in range(8)))
    config = study_file(tmp_path, checkpoint, FILE_TASK.format(data), SMALL)
    text = config.read_text()
    config.write_text(text)
    out = tmp_path / "run"
    assert main(["study", str(config), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    lines = plan_lines(capsys, str(config), "--out", str(out))
    # masked LM: importance and its curve; the task: fine-tuning, importance, curve
    assert "; 5 units; run directory" in summary(lines)
    assert summary(lines).endswith(": 5 done, 0 partly done")
    # A curve with some of its points saved counts as partly done.
    curve = out / "units" / "curves" / "tiny" / "mine" / "l1" / "seed-0.json"
    saved = json.loads(curve.read_text())
    curve.write_text(json.dumps({**saved, "points": saved["points"][:1]}))
    lines = plan_lines(capsys, str(config), "--out", str(out))
    assert summary(lines).endswith(": 4 done, 1 partly done")
    assert any(line.startswith("33%") and "pruning curve, l1" in line for line in lines)
    config.write_text(text.replace("max_steps = 1", "max_steps = 2"))
    lines = plan_lines(capsys, str(config), "--out", str(out))
    assert "made by another configuration; `study` refuses it unless --force" in summary(lines)
