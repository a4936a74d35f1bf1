"""Atomic output files and the provenance recorded with every result."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path

from headcount.errors import HeadcountError


def check_output_path(path: str | Path) -> Path:
    """Refuse an output path that cannot be written, before any long computation."""
    path = Path(path)
    if path.is_dir():
        raise HeadcountError(f"--out {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise HeadcountError(f"output directory does not exist: {path.parent}")
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that readers see the old file or the whole new one, never
    half of it: write a temporary file beside it, fsync, then rename over the target."""
    path = check_output_path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: str | Path, columns, rows: list[dict]) -> Path:
    """`rows` as CSV with `columns` in that order, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def write_json(path: str | Path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2) + "\n")


def read_json_record(path: str | Path, what: str) -> dict:
    """A JSON object from `path`, or a one-line HeadcountError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HeadcountError(f"{what} not found: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HeadcountError(f"{path} is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise HeadcountError(f"{path} is not a headcount {what}")
    return record


SCORES_KEYS = ("scores", "raw_scores", "layers", "heads")


def read_scores_record(path: str | Path, required: tuple[str, ...] = SCORES_KEYS) -> dict:
    """A `scores.json` of `headcount importance`, checked for the `required` keys."""
    record = read_json_record(path, "scores file")
    if not all(key in record for key in required):
        raise HeadcountError(
            f"{path} is not a scores.json of `headcount importance` "
            f"(needs {', '.join(required)})"
        )
    return record


def _git_hash() -> str | None:
    """Commit of the headcount source tree, when it runs from a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def versions() -> dict[str, str | None]:
    import torch
    import transformers

    from headcount.version import __version__

    return {
        "headcount": __version__,
        "headcount_git": _git_hash(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
