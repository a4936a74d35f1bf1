"""The run-directory lock: one writer; a dead holder's lock taken over with a note; a live
one (or one on another host) never; under torchrun only the main process locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headcount.errors import HeadcountError
from headcount.study.lock import LOCK_FILE, process_alive, run_lock


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_holder(root: Path, **holder) -> None:
    root.mkdir(parents=True, exist_ok=True)
    record = {"pid": 1, "host": socket.gethostname(), "started": "2025-01-01T00:00:00+00:00",
              **holder}
    (root / LOCK_FILE).write_text(json.dumps(record))


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    root = tmp_path / "run"
    with run_lock(root):
        holder = json.loads((root / LOCK_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(HeadcountError) as refused:
            with run_lock(root):
                pytest.fail("two writers")
        message = str(refused.value)
        assert "\n" not in message
        for part in (str(root), f"pid {os.getpid()}", socket.gethostname(), holder["started"]):
            assert part in message
        assert json.loads((root / LOCK_FILE).read_text()) == holder  # untouched
    assert not (root / LOCK_FILE).exists()


def test_the_lock_goes_when_the_block_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt), run_lock(tmp_path):
        raise KeyboardInterrupt
    assert not (tmp_path / LOCK_FILE).exists()
    with run_lock(tmp_path):
        pass


def test_a_dead_processes_lock_is_taken_over_with_a_note(tmp_path):
    pid = dead_pid()
    assert not process_alive(pid)
    write_holder(tmp_path, pid=pid)
    notes = []
    with run_lock(tmp_path, note=notes.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1
    assert f"pid {pid}" in notes[0] and "no longer running" in notes[0]


def test_a_lock_naming_a_live_process_is_refused(tmp_path):
    """Also where file locks do not work (some network file systems): the holder's pid is
    checked; a pid reused by another process (other start time) does not count."""
    parent = os.getppid()
    write_holder(tmp_path, pid=parent)
    with pytest.raises(HeadcountError, match=f"pid {parent} on"):
        with run_lock(tmp_path):
            pass
    write_holder(tmp_path, pid=parent, start_ticks=1)  # started at boot: not this process
    notes = []
    with run_lock(tmp_path, note=notes.append):
        pass
    assert "no longer running" in notes[0]


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    write_holder(tmp_path, pid=dead_pid(), host="elsewhere.example")
    with pytest.raises(HeadcountError, match=f"another host.*delete {tmp_path / LOCK_FILE}"):
        with run_lock(tmp_path):
            pass
    assert json.loads((tmp_path / LOCK_FILE).read_text())["host"] == "elsewhere.example"


SCRIPT = """
import json, os, sys
from pathlib import Path
from headcount.distributed import init_from_launcher, rank_and_world
from headcount.errors import HeadcountError
from headcount.study.lock import LOCK_FILE, run_lock

init_from_launcher("cpu")
rank, world = rank_and_world()
root = Path(sys.argv[1])
out = Path(sys.argv[2]) / f"rank-{rank}.json"
try:
    with run_lock(root):
        holder = json.loads((root / LOCK_FILE).read_text())
        out.write_text(json.dumps({"pid": os.getpid(), "holder": holder["pid"],
                                   "world": world}))
except HeadcountError as error:
    out.write_text(json.dumps({"error": str(error)}))
"""


def torchrun_script(script: Path, *args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                             "2", str(script), *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.integration
def test_under_torchrun_only_the_main_process_locks(tmp_path):
    script = tmp_path / "lock_script.py"
    script.write_text(SCRIPT)
    root, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    torchrun_script(script, root, first)
    ranks = [json.loads((first / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    # Both ranks ran inside the lock, which the main process held for them.
    assert ranks[0]["holder"] == ranks[1]["holder"] == ranks[0]["pid"] != ranks[1]["pid"]
    assert not (root / LOCK_FILE).exists()
    with run_lock(root):  # held here: both ranks stop with the same one-line message
        torchrun_script(script, root, second)
    errors = [json.loads((second / f"rank-{r}.json").read_text())["error"] for r in (0, 1)]
    assert errors[0] == errors[1] and f"pid {os.getpid()}" in errors[0]
