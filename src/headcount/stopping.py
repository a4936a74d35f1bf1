"""Stopping a long command cleanly: Ctrl-C (SIGINT) or SIGTERM (a cluster's time limit).

Inside `stop_on_signals` both signals raise `Stopped`, a KeyboardInterrupt, in the main
thread: the work in progress unwinds like on Ctrl-C, every atomic write in flight removes
its temporary file, finished results stay, and the command exits with 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal ended.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The command was asked to stop by signal `signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` during the block (in the main thread; elsewhere
    nothing changes); the previous handlers are restored afterwards.

    Example:
        >>> with stop_on_signals():
        ...     run_study(config, "runs/x")  # `kill PID` -> Stopped, exit status 143
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
