"""Run (or resume) every unit of a study and write its tidy tables.

The report on top of the tables is written by `headcount.report.run.run_study`; this layer
stops at the tables, so that it never imports the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from headcount.io import write_json
from headcount.study.config import StudyConfig
from headcount.study.lock import run_lock
from headcount.study.rundir import check_run_dir, environment, prepare_run_dir
from headcount.study.units import Run


@dataclass(frozen=True)
class StudyRun:
    """What a finished (or resumed) study left in its run directory."""

    root: Path
    tables: dict[str, list[dict]]
    meta: dict  # name, config text, environment with start/finish times, notes
    run: Run


@contextmanager
def open_run(config: StudyConfig, out: str | Path, *, force: bool = False,
             progress: bool = True) -> Iterator[Run]:
    """The run directory `out` of `config`, checked, locked and prepared for the block.

    Everything that can refuse the run (another configuration, a newer format, a directory
    that is not a run directory, another process writing it) is checked before anything is
    written; `force` never bypasses the lock.

    Example:
        >>> with open_run(load_config("examples/glue-local.toml"), "runs/x") as run:
        ...     study = study_tables(run)
    """
    root = Path(out)
    check_run_dir(config, root, force=force)
    with run_lock(root):
        prepare_run_dir(config, root, force=force)
        yield Run(config, root, progress=progress)


def study_tables(run: Run) -> StudyRun:
    """Run the units of `run` that are not done yet, then write the tables (the caller
    holds the run directory, see `open_run`)."""
    from headcount.models import resolve_device
    from headcount.study.plan import run_all
    from headcount.study.tables import write_tables

    config, root = run.config, run.root
    device = resolve_device(config.device)
    started = datetime.now(UTC).isoformat()
    write_json(root / "environment.json", environment(device))
    tables, notes = run_all(run)
    write_tables(root / "tables", tables)
    meta = {"name": config.name, "config_text": config.text,
            "environment": {**environment(device), "started": started,
                            "finished": datetime.now(UTC).isoformat()},
            "notes": notes}
    return StudyRun(root=root, tables=tables, meta=meta, run=run)


def run_units(config: StudyConfig, out: str | Path, *, force: bool = False,
              progress: bool = True) -> StudyRun:
    """Run the units of `config` that are not done yet into `out`, then write the tables.

    Example:
        >>> study = run_units(load_config("examples/glue-local.toml"), "runs/glue-local")
        >>> sorted(study.tables)[:2]
        ['compensation', 'compensation_heads']
    """
    with open_run(config, out, force=force, progress=progress) as run:
        return study_tables(run)
