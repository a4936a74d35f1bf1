"""The checksums of a run's units: what each unit's files were when they were written, so
that a unit damaged on disk afterwards is found and computed again.

Every unit (a file such as an importance record or a curve, or a folder such as a
fine-tuned checkpoint) gets a line in RUN_DIR/units/checksums.jsonl when it is written:
the SHA-256 and size of each of its files. The file is only ever appended to (a line cut
short by a kill is skipped when read), and a unit written several times (a curve, after
each point) has one line per version, written just before that version ("pending" until
the next one: a kill in between leaves the previous version, or nothing yet). On resume a
unit is intact when its files match one of its recorded versions. Otherwise it is damaged:
gone (when it is known to have been written), files missing, cut short (truncated), not
valid JSON, or other bytes than recorded. A unit written before checksums existed (an
older run directory, or a kill between writing a unit and its line) has no line: it is
accepted when its JSON files parse, and its checksums are recorded then.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

LEDGER_FILE = "checksums.jsonl"
CHUNK = 1 << 20


def _file_digest(path: Path) -> dict:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def unit_digests(output: Path) -> dict[str, dict]:
    """{name: {"sha256", "bytes"}} of a unit's files: the file itself, or every file of a
    folder (by its path inside the folder)."""
    if output.is_file():
        return {output.name: _file_digest(output)}
    return {path.relative_to(output).as_posix(): _file_digest(path)
            for path in sorted(output.rglob("*")) if path.is_file()}


def text_digests(output: Path, text: str) -> dict[str, dict]:
    """`unit_digests` of the file `output` once it holds `text`."""
    data = text.encode("utf-8")
    return {output.name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}


def _not_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return False


def describe_damage(output: Path, recorded: dict[str, dict], current: dict[str, dict]) -> str:
    """What differs between a unit's files and their recorded checksums, in a few words
    (a folder's files by name: "model.safetensors missing")."""
    folder = output.is_dir()

    def named(name: str, what: str) -> str:
        return f"{name} {what}" if folder else what

    def path(name: str) -> Path:
        return output / name if folder else output

    missing = [name for name in recorded if name not in current]
    if missing:
        return named(", ".join(missing), "missing")
    for name, expected in recorded.items():
        if current[name]["bytes"] < expected["bytes"]:
            return named(name, f"truncated to {current[name]['bytes']} of "
                               f"{expected['bytes']} bytes")
    changed = [name for name in recorded if current[name] != recorded[name]]
    for name in changed:
        if name.endswith(".json") and _not_json(path(name)):
            return named(name, "not valid JSON")
    return named(", ".join(changed), "not matching its recorded checksum")


class Ledger:
    """The checksum lines of one run directory, read once and appended to as units are
    written (only by the process that writes the run, `writable`)."""

    def __init__(self, root: Path, *, writable: bool = True):
        self.root = root
        self.path = root / "units" / LEDGER_FILE
        self.writable = writable
        self.versions: dict[str, list[dict[str, dict]]] = {}
        self.written: set[str] = set()  # units known to have been written (not only pending)
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                self._add(entry["unit"], entry["files"], entry.get("pending", False))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a kill
        if text and not text.endswith("\n") and self.writable:
            with self.path.open("a", encoding="utf-8") as file:
                file.write("\n")  # the next line must not continue the cut one

    def key(self, output: Path) -> str:
        return output.relative_to(self.root).as_posix()

    def _add(self, key: str, digests: dict[str, dict], pending: bool) -> None:
        versions = self.versions.setdefault(key, [])
        if versions or not pending:  # a later version is only recorded once one was written
            self.written.add(key)
        versions.append(digests)

    def record(self, output: Path, digests: dict[str, dict] | None = None, *,
               pending: bool = False) -> None:
        """Add the checksums of `output` as written now (or `digests`; `pending`: of the
        version about to be written)."""
        digests = unit_digests(output) if digests is None else digests
        key = self.key(output)
        if self.versions.get(key, [None])[-1] == digests:
            return
        self._add(key, digests, pending)
        if not self.writable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"unit": key, "files": digests, **({"pending": True} if pending else {})}
        line = json.dumps(entry) + "\n"
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def damage(self, output: Path) -> str | None:
        """None when `output` is intact (or was never written); else what is wrong with
        it. A unit without checksums whose JSON parses is accepted and recorded."""
        versions = self.versions.get(self.key(output))
        if not output.exists():
            return "missing" if self.key(output) in self.written else None
        current = unit_digests(output)
        if versions:
            if current in versions:
                return None
            return describe_damage(output, versions[-1], current)
        folder = output.is_dir()
        broken = [name for name in current if name.endswith(".json")
                  and _not_json(output / name if folder else output)]
        if broken:
            return f"{', '.join(broken)} not valid JSON" if folder else "not valid JSON"
        if not current:
            return "empty"
        self.record(output, current)
        return None
