"""A study (or the demo) run to its end, with its report: the `study` and `demo` commands."""

from __future__ import annotations

from pathlib import Path

from headcount.report.assemble import write_report
from headcount.study.config import StudyConfig, load_config, parse_config, run_dir
from headcount.study.demo import FAST, FULL, demo_config_text
from headcount.study.progress import stages_of
from headcount.study.runner import open_run, study_tables


def run_study(config: StudyConfig, out: str | Path, *, force: bool = False,
              progress: bool = True) -> dict:
    """Run (or resume) the study into `out` and write its report; the report's paths. The
    run directory is locked until the report is written.

    Example:
        >>> run_study(load_config("examples/glue-local.toml"), "runs/glue-local")["html"]
        PosixPath('runs/glue-local/report.html')
    """
    with open_run(config, out, force=force, progress=progress) as run:
        study = study_tables(run)
        stages = stages_of(study.root)
        if stages is not None:
            stages.begin(("report",))
        paths = write_report(study.root, study.tables, study.meta)
    counts = run.counts
    damaged = f" ({counts['recomputed']} damaged, computed again)" if counts["recomputed"] else ""
    run.log(f"{counts['done']} units computed{damaged}, {counts['skipped']} already done; "
            f"report: {paths['html']}")
    return paths


def study_command(config_path: str, out: str | None, *, force: bool, progress: bool) -> dict:
    """`headcount study CONFIG [--out DIR]`: the run directory defaults to runs/<name>."""
    config = load_config(config_path)
    return run_study(config, run_dir(config, out), force=force, progress=progress)


def run_demo(out: str = "runs/demo", *, full: bool = False, device: str = "auto",
             force: bool = False, progress: bool = True, **overrides) -> dict:
    """Run the offline demo study (MiniLM on BBC News) into `out`, with its report: the fast
    demo (about 6 minutes on 2 CPU cores), or with `full` the earlier, larger one (about 30).
    `overrides`: seeds, train_examples, fit_steps (None keeps the size's own)."""
    text = demo_config_text(FULL if full else FAST, device=device, **overrides)
    return run_study(parse_config(text, "demo config"), out, force=force, progress=progress)
