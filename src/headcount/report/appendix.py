"""The report's closing sections, after the analyses: the fine-tuned models, the
configuration as run, the environment, the run's notes and the list of every table.

Example:
    >>> config_section({}) is None
    True
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from headcount.report.format import (
    MISSING,
    as_text,
    fmt,
    fmt_stats,
    group_rows,
    is_main,
    mean_of,
    seed_count,
    table_rows,
)
from headcount.report.render import Section, Table, table_links

# The environment's keys shown first, in this order (the versions get a table of their own).
_FIRST_KEYS = ("device", "python", "platform", "git", "started", "finished")


def finetune_section(tables: dict, run_dir: Path) -> Section | None:
    rows = [row for row in table_rows(tables, "finetune") if is_main(row)]
    if not rows:
        return None
    body = []
    for (model, task, kind, frozen), members in group_rows(
            rows, "model", "task", "kind", "freeze_layers").items():
        count = seed_count(members)
        body.append([as_text(model), as_text(task), as_text(kind),
                     MISSING if frozen in (None, 0) else as_text(frozen),
                     as_text(members[0].get("metric")), str(count),
                     fmt_stats((r.get("value") for r in members), count),
                     fmt(mean_of(r.get("steps") for r in members), 0),
                     fmt(mean_of(r.get("seconds") for r in members), 1),
                     fmt(mean_of(r.get("examples_per_second") for r in members), 1)])
    return Section("finetune", "Fine-tuned models", [
        "Main metric of every fine-tuning run, mean ± std over seeds; steps, seconds and "
        "throughput are means over seeds."], tables=[Table(
            ["model", "task", "kind", "frozen layers", "metric", "seeds", "value", "steps",
             "seconds", "examples/s"], body)], links=table_links(run_dir, "finetune"))


def config_section(meta: dict) -> Section | None:
    text = meta.get("config_text")
    if not text:
        return None
    return Section("configuration", "Configuration", ["The configuration as run (TOML)."],
                   code=str(text))


def environment_section(meta: dict) -> Section | None:
    environment = meta.get("environment") or {}
    if not environment:
        return None
    rows = []
    for key in _FIRST_KEYS:
        if key in environment:
            rows.append([key, as_text(environment.get(key))])
    duration = _duration(environment.get("started"), environment.get("finished"))
    if duration:
        rows.append(["duration", duration])
    for key, value in environment.items():
        if key not in (*_FIRST_KEYS, "versions"):
            rows.append([str(key), as_text(value)])
    section = Section("environment", "Environment", tables=[Table(["", ""], rows)])
    versions = environment.get("versions") or {}
    if versions:
        section.tables.append(Table(["package", "version"],
                                    [[str(k), as_text(v)] for k, v in versions.items()],
                                    "Versions."))
    return section


def _duration(started, finished) -> str | None:
    try:
        seconds = (datetime.fromisoformat(str(finished))
                   - datetime.fromisoformat(str(started))).total_seconds()
    except (TypeError, ValueError):
        return None
    if seconds < 0:
        return None
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {seconds:02d} s"
    return f"{minutes} min {seconds:02d} s"


def notes_section(meta: dict) -> Section | None:
    notes = meta.get("notes")
    if not notes:
        return None
    return Section("notes", "Notes", bullets=[str(note) for note in notes])


def tables_section(tables: dict, run_dir: Path) -> Section | None:
    body = []
    for name, rows in (tables or {}).items():
        if not rows:
            continue
        files = table_links(run_dir, name)
        body.append([str(name), str(len(rows)),
                     ", ".join(href for _, href in files) if files else MISSING])
    if not body:
        return None
    return Section("tables", "Tables", ["Every table of the run, in full."],
                   tables=[Table(["table", "rows", "files"], body)])
