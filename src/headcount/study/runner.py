"""Run (or resume) every unit of a study and write its tidy tables.

The report on top of the tables is written by `headcount.report.run.run_study`; this layer
stops at the tables, so that it never imports the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from headcount.io import write_json
from headcount.study.config import StudyConfig
from headcount.study.units import Run, environment, prepare_run_dir


@dataclass(frozen=True)
class StudyRun:
    """What a finished (or resumed) study left in its run directory."""

    root: Path
    tables: dict[str, list[dict]]
    meta: dict  # name, config text, environment with start/finish times, notes
    run: Run


def run_units(config: StudyConfig, out: str | Path, *, force: bool = False,
              progress: bool = True) -> StudyRun:
    """Run the units of `config` that are not done yet into `out`, then write the tables.

    Example:
        >>> study = run_units(load_config("examples/glue-local.toml"), "runs/glue-local")
        >>> sorted(study.tables)[:2]
        ['compensation', 'compensation_heads']
    """
    from headcount.models import resolve_device
    from headcount.study.plan import run_all
    from headcount.study.tables import write_tables

    root = Path(out)
    device = resolve_device(config.device)
    prepare_run_dir(config, root, force=force)
    run = Run(config, root, progress=progress)
    started = datetime.now(UTC).isoformat()
    write_json(root / "environment.json", environment(device))
    tables, notes = run_all(run)
    write_tables(root / "tables", tables)
    meta = {"name": config.name, "config_text": config.text,
            "environment": {**environment(device), "started": started,
                            "finished": datetime.now(UTC).isoformat()},
            "notes": notes}
    return StudyRun(root=root, tables=tables, meta=meta, run=run)
