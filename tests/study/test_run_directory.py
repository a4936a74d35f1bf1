"""Units' checksums (damaged units found, reported and removed), the run directory's format
check, and a unit stopped midway leaving nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from headcount.errors import HeadcountError
from headcount.study.checksums import LEDGER_FILE, Ledger
from headcount.study.config import parse_config
from headcount.study.rundir import RUN_FORMAT, STATE_FILE, check_run_dir, prepare_run_dir
from headcount.study.units import Run

CONFIG = """
[study]
name = "tiny"
[[models]]
name = "m"
path = "model"
[[tasks]]
name = "toy"
task = "sst2"
[pretrain]
text = "text.txt"
"""


@pytest.fixture
def config(tmp_path_factory):
    text = tmp_path_factory.mktemp("text") / "text.txt"
    text.write_text("some text\n")
    return parse_config(CONFIG.replace("text.txt", str(text)), "test config")


def unit_file(root: Path, name: str, payload: dict) -> Path:
    path = root / "units" / "kind" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def unit_folder(root: Path) -> Path:
    folder = root / "units" / "finetune" / "seed-0"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "metrics.json").write_text('{"metrics": {"accuracy": 0.5}}\n')
    return folder


def test_intact_units_pass_and_every_kind_of_damage_is_named(tmp_path):
    ledger = Ledger(tmp_path)
    record = unit_file(tmp_path, "a.json", {"scores": [0.25, 0.5], "name": "x"})
    folder = unit_folder(tmp_path)
    for output in (record, folder):
        ledger.record(output)
    ledger = Ledger(tmp_path)  # as read back on resume
    assert ledger.damage(record) is None and ledger.damage(folder) is None
    text = record.read_text()
    record.write_text(text[:10])
    assert ledger.damage(record) == f"truncated to 10 of {len(text)} bytes"
    record.write_text(text.replace("0.25", "0.35"))
    assert ledger.damage(record) == "not matching its recorded checksum"
    record.write_text(text.replace('"name"', '"name' + "'"))
    assert ledger.damage(record) == "not valid JSON"
    record.unlink()
    assert ledger.damage(record) == "missing"
    (folder / "metrics.json").write_text("{")
    assert ledger.damage(folder) == "metrics.json truncated to 1 of 31 bytes"
    (folder / "model.safetensors").unlink()
    assert ledger.damage(folder) == "model.safetensors missing"
    assert ledger.damage(tmp_path / "units" / "kind" / "never-written.json") is None


def test_a_unit_written_again_matches_any_of_its_versions(tmp_path):
    ledger = Ledger(tmp_path)
    curve = unit_file(tmp_path, "curve.json", {"points": [1]})
    first = curve.read_text()
    ledger.record(curve)
    curve.write_text(json.dumps({"points": [1, 2]}))
    ledger.record(curve)
    curve.write_text(first)  # a kill before the second version replaced the first
    assert Ledger(tmp_path).damage(curve) is None


def test_a_version_recorded_before_it_was_written_is_not_missing(tmp_path, config):
    """A curve's checksums are recorded just before each version is written: stopped in
    between, the first version is not there yet (nothing to report); a later one leaves the
    version before it."""
    run = Run(config, tmp_path, progress=False)
    curve = run.path("curves", "seed-0.json")
    run.ledger.record(curve, {"seed-0.json": {"sha256": "0" * 64, "bytes": 3}}, pending=True)
    assert Ledger(tmp_path).damage(curve) is None and not Run(config, tmp_path).finished(curve)
    run.write_unit(curve, {"points": [1]})
    run.ledger.record(curve, {"seed-0.json": {"sha256": "1" * 64, "bytes": 3}}, pending=True)
    assert Ledger(tmp_path).damage(curve) is None
    curve.unlink()
    assert Ledger(tmp_path).damage(curve) == "missing"


def test_a_line_cut_by_a_kill_is_skipped_and_the_next_starts_on_its_own(tmp_path):
    ledger = Ledger(tmp_path)
    a = unit_file(tmp_path, "a.json", {"a": 1})
    b = unit_file(tmp_path, "b.json", {"b": 2})
    ledger.record(a)
    path = tmp_path / "units" / LEDGER_FILE
    path.write_text(path.read_text() + '{"unit": "units/kind/b.json", "fil')
    reread = Ledger(tmp_path)
    reread.record(b)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["unit"] == "units/kind/b.json"
    assert Ledger(tmp_path).damage(a) is None and Ledger(tmp_path).damage(b) is None


def test_units_without_checksums_are_accepted_when_they_parse(tmp_path):
    """Run directories of older versions (and a kill between a unit and its line)."""
    good = unit_file(tmp_path, "good.json", {"x": 1})
    bad = unit_file(tmp_path, "bad.json", {"x": 1})
    bad.write_text('{"x": ')
    ledger = Ledger(tmp_path)
    assert ledger.damage(good) is None
    assert ledger.damage(bad) == "not valid JSON"
    good.write_text(good.read_text().replace("1", "2"))  # recorded now: a change shows
    assert Ledger(tmp_path).damage(good) == "not matching its recorded checksum"


def test_a_damaged_unit_is_reported_in_one_line_removed_and_run_again(tmp_path, config,
                                                                      capsys):
    run = Run(config, tmp_path, progress=False)
    folder = tmp_path / "units" / "finetune" / "seed-0"
    with run.unit("fine-tune", folder) as todo:
        assert todo
        shutil.copytree(unit_folder(tmp_path / "staging"), folder)
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    run = Run(config, tmp_path, progress=False)
    with run.unit("fine-tune", folder) as todo:
        assert todo and not folder.exists()
        shutil.copytree(tmp_path / "staging" / "units" / "finetune" / "seed-0", folder)
    err = capsys.readouterr().err.splitlines()
    assert err == ["headcount: note: unit units/finetune/seed-0 is damaged: model.safetensors "
                   "truncated to 100 of 2048 bytes; computing it again"]
    assert run.counts == {"done": 1, "skipped": 0, "recomputed": 1}
    with Run(config, tmp_path, progress=False).unit("fine-tune", folder) as todo:
        assert not todo


def test_a_unit_stopped_midway_is_discarded(tmp_path, config, capsys):
    run = Run(config, tmp_path)
    output = run.path("importance", "seed-0.json")
    with pytest.raises(KeyboardInterrupt), run.unit("importance", output) as todo:
        assert todo
        raise KeyboardInterrupt
    assert not output.exists() and "importance: stopped; the unit was discarded" in \
        capsys.readouterr().err
    assert Ledger(tmp_path).damage(output) is None  # not recorded: not done


def test_a_run_directory_of_a_newer_format_is_refused_untouched(tmp_path, config):
    root = tmp_path / "run"
    prepare_run_dir(config, root, force=False)
    state = json.loads((root / STATE_FILE).read_text())
    assert (state["format"], state["config_digest"]) == (RUN_FORMAT, config.digest)
    (root / STATE_FILE).write_text(json.dumps({**state, "format": RUN_FORMAT + 1,
                                               "headcount": "9.0.0"}))
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    for force in (False, True):
        with pytest.raises(HeadcountError) as refused:
            prepare_run_dir(config, root, force=force)
        assert "headcount 9.0.0" in str(refused.value) and "\n" not in str(refused.value)
        assert f"format {RUN_FORMAT + 1}" in str(refused.value)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_a_run_directory_of_the_first_format_is_upgraded(tmp_path, config):
    root = tmp_path / "run"
    root.mkdir()
    old = {"name": "tiny", "config_digest": config.digest, "created": "2025-01-01"}
    (root / STATE_FILE).write_text(json.dumps(old))
    assert check_run_dir(config, root, force=False) == old
    prepare_run_dir(config, root, force=False)
    state = json.loads((root / STATE_FILE).read_text())
    assert state == {**old, "format": RUN_FORMAT, "headcount": state["headcount"]}
