"""One writer per run directory: the lock a study (or the demo) holds while it writes.

The lock is RUN_DIR/lock.json, which names its holder (pid, host, start time, command).
It is held with `flock` on that file, so the kernel releases it when the holder dies (even
by SIGKILL): a second process finds the lock taken and stops at once with one line naming
the holder, before it writes anything. A lock file whose holder is gone (it was killed
before it could remove the file) is taken over with a note, when the holder ran on this
host and its pid is no longer running. A lock file from another host is never taken over:
its process cannot be checked from here (on file systems whose locks do not reach across
hosts it may still be running), so the message says which file to delete once it is gone.

Under torchrun / accelerate launch only the main process takes the lock; the other ranks
wait for its outcome and stop with the same line when it could not be taken.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

from headcount.errors import HeadcountError

LOCK_FILE = "lock.json"
HOLDER_WAIT_SECONDS = 2.0  # how long a holder may take to write its name after locking


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), or None where unknown:
    a pid reused by a new process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the fields after the command name
    return None if fields[0] == "Z" else int(fields[19])


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs on this host (and, given its start time, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    if Path("/proc/self/stat").exists():
        ticks = _start_ticks(pid)
        if ticks is None:  # gone meanwhile, or a zombie: its lock was released
            return False
        return start_ticks is None or ticks == start_ticks
    return True


def print_note(line: str) -> None:
    """Print a note on stderr, as one line."""
    print(f"headcount: note: {line}", file=sys.stderr, flush=True)


def holder_text(holder: dict) -> str:
    """How messages name a lock's holder."""
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}")


def _read_holder(fd: int) -> dict | None:
    """The lock file's holder record; None when the file is empty; {} when unreadable."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return True


def _in_use(root: Path, holder: dict) -> HeadcountError:
    """The one-line refusal while another process writes `root`."""
    return HeadcountError(f"{root} is being written by another headcount process "
                          f"({holder_text(holder)}); wait for it to finish or stop it, "
                          "or use another --out")


def _busy(root: Path, fd: int) -> HeadcountError:
    """`_in_use`, naming the process that holds the lock on `fd`."""
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    holder = _read_holder(fd)
    while not holder and time.monotonic() < deadline:  # it has locked, not yet written
        time.sleep(0.05)
        holder = _read_holder(fd)
    return _in_use(root, holder or {})


def _stale_note(root: Path, holder: dict | None, locked: bool | None) -> str | None:
    """None for a free lock file; a note when a dead holder's lock is taken over; raises
    when the holder may still be running."""
    if holder is None:
        return None
    path = root / LOCK_FILE
    if not holder:
        if locked:
            return f"{path} was unreadable and no process holds it; taking it over"
        raise HeadcountError(f"{path} is unreadable; delete it if no headcount process is "
                             f"writing {root}")
    if holder.get("host") != socket.gethostname():
        raise HeadcountError(
            f"{root} is locked by a headcount process on another host "
            f"({holder_text(holder)}); delete {path} once that process is gone")
    pid = holder.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and process_alive(pid,
                                                                     holder.get("start_ticks")):
        raise _in_use(root, holder)
    return (f"{root} was locked by a process that is no longer running "
            f"({holder_text(holder)}); taking over its lock")


def _acquire(root: Path) -> tuple[int, str | None]:
    """(the locked file's descriptor, a takeover note or None)."""
    path = root / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_flock(fd)
            if locked is False:
                raise _busy(root, fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed the file after we opened it: open it again
                os.close(fd)
                continue
            note = _stale_note(root, _read_holder(fd), locked)
            _write_holder(fd)
            return fd, note
        except BaseException:
            os.close(fd)
            raise


def _write_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().astimezone().isoformat(timespec="seconds"),
              "start_ticks": _start_ticks(os.getpid()), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    os.fsync(fd)


@contextmanager
def _held(root: Path, note: Callable[[str], None]) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd, message = _acquire(root)
    try:
        if message:
            note(message)
        yield
    finally:
        # Removed while still locked: a process that opened the old file finds it gone
        # and opens the new one (`_acquire`).
        (root / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def run_lock(root: str | Path, note: Callable[[str], None] = print_note) -> Iterator[None]:
    """Hold the lock of run directory `root` for the block (creating `root` if needed);
    a HeadcountError naming the holder when another process has it. `note` is given the
    line saying that a dead process's lock was taken over.

    Example:
        >>> with run_lock("runs/glue-local"):
        ...     ...  # the only process writing runs/glue-local
    """
    from headcount.distributed import is_distributed, is_main_process

    root = Path(root)
    if not is_distributed():
        with _held(root, note):
            yield
        return
    with _main_process_holds(root, note, is_main_process()):
        yield


@contextmanager
def _main_process_holds(root: Path, note: Callable[[str], None], main: bool) -> Iterator[None]:
    """The main rank locks; every rank learns the outcome (and stops with the same line)."""
    import torch.distributed as dist

    with ExitStack() as stack:
        outcome: list = [None]
        if main:
            try:
                stack.enter_context(_held(root, note))
            except HeadcountError as error:
                outcome = [str(error)]
        dist.broadcast_object_list(outcome, src=0)  # the other ranks wait here for the lock
        if outcome[0] is not None:
            raise HeadcountError(outcome[0])
        yield
        dist.barrier()  # every rank is done writing before the lock goes
