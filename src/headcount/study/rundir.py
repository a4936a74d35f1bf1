"""The run directory's own files: its state (which configuration and format made it), the
checks before a run may write it, and the clean-up of what a killed run left behind.

RUN_DIR/study.json names the configuration (its digest) and the run-directory format. A
directory of another configuration is refused unless `--force`, which starts it afresh; a
directory of a newer format (written by a newer headcount that changed what units hold)
is refused always. Both checks only read: `check_run_dir` runs before the run directory is
locked, so that a refused run touches nothing.
"""

from __future__ import annotations

import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path

import torch

from headcount.errors import HeadcountError
from headcount.io import read_json_record, versions, write_atomic, write_json
from headcount.study.config import StudyConfig
from headcount.study.lock import LOCK_FILE
from headcount.version import __version__

STATE_FILE = "study.json"
# The run-directory format this headcount writes and reads (and every older one): 1 had
# no checksums; 2 records a checksum of every unit (units/checksums.jsonl).
RUN_FORMAT = 2


def _contents(root: Path) -> list[Path]:
    """What the directory holds besides a lock file."""
    if not root.is_dir():
        return []
    return [path for path in root.iterdir() if path.name != LOCK_FILE]


def check_run_dir(config: StudyConfig, root: Path, *, force: bool) -> dict | None:
    """The run directory's state (None for a new or empty directory), or a one-line
    HeadcountError when `config` may not run in it: a directory that is not a headcount
    run directory, one of a newer format, one of another configuration (unless `force`).
    Reads only."""
    if root.exists() and not root.is_dir():
        raise HeadcountError(f"--out {root} is a file; give a directory")
    if not _contents(root):
        return None
    state_path = root / STATE_FILE
    if not state_path.exists():
        raise HeadcountError(f"--out {root} exists, is not empty and is not a headcount "
                             "run directory; choose another --out")
    state = read_json_record(state_path, "study state")
    written = state.get("format", 1)
    if not isinstance(written, int) or written > RUN_FORMAT:
        raise HeadcountError(
            f"{root} was written by headcount {state.get('headcount', 'of a newer version')} "
            f"(run-directory format {written}); this headcount {__version__} reads formats "
            f"up to {RUN_FORMAT}: upgrade headcount, or use another --out")
    if state.get("config_digest") != config.digest and not force:
        raise HeadcountError(
            f"{root} was made by a different configuration (digest "
            f"{state.get('config_digest')}, this one {config.digest}); use another "
            "--out, or --force to start it afresh"
        )
    return state


def prepare_run_dir(config: StudyConfig, root: Path, *, force: bool) -> None:
    """Create the run directory, or check that it belongs to this configuration (the
    caller holds its lock).

    `force` starts afresh only in a directory that is a headcount run directory (it has
    study.json): nothing else is ever deleted.
    """
    state = check_run_dir(config, root, force=force)
    if state is not None and state.get("config_digest") != config.digest:
        for path in _contents(root):  # --force: everything but the lock we hold
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        state = None
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(root)
    if state is None or state.get("format", 1) < RUN_FORMAT:
        state = state or {"name": config.name, "config_digest": config.digest,
                          "created": datetime.now(UTC).isoformat()}
        write_json(root / STATE_FILE, {**state, "format": RUN_FORMAT,
                                       "headcount": __version__})
    write_atomic(root / "config.toml", config.text)


def remove_partial_writes(root: Path) -> None:
    """Atomic writes stage into hidden files and folders ('.name.xyz') beside their target;
    a killed run can leave some behind. Nothing else in units/ is hidden; beside the tables,
    figures and report only the staging files ('.name....tmp...') are removed."""
    hidden = [path for pattern in (".*.tmp*", "*/.*.tmp*") for path in root.glob(pattern)]
    if (root / "units").exists():
        hidden += (root / "units").rglob(".*")
    for path in sorted(hidden, reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def environment(device: torch.device) -> dict:
    return {
        "versions": versions(),
        "git": versions().get("headcount_git"),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                 if device.type == "cuda" else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
