"""Report stage of the study runner: figures, headline findings, report.md and report.html.

`write_report(run_dir, tables, meta)` turns the study's tidy tables (lists of dicts, one per
analysis; any may be missing or empty) into

- figures under RUN_DIR/figures/, each as PNG (150 dpi) and SVG: the pruning curves on the
  downstream tasks (Figure 1 of the reference study) and on the masked LM (Figure 2), the
  recall of important heads (Figure 3), attention and feature drift per layer (Figure 4),
  head importance against JS divergence (Figure 6), fine-tuning with frozen layers, and
  fine-tuning of pruned models;
- headline findings: sentences whose numbers are computed from the tables
  (`headline_findings`), never typed in;
- RUN_DIR/report.md and RUN_DIR/report.html (self-contained: inline CSS, figures by
  relative path), each with one section per figure, the aggregated numbers behind it and a
  link to the full table under RUN_DIR/tables/, then the configuration, the environment and
  the run's notes. A section whose table is missing or empty is left out.

Means and standard deviations are over seeds (population standard deviation, as in
`headcount.recall`). Relative performance thresholds follow the study: 90% of the unpruned
downstream performance (Figure 1), 75% of the masked-LM performance (the paper's guideline,
Figure 3) and recall 90%.

The stage is split over modules: `headcount.report.format` (thresholds, colours, helpers on
table values), `headcount.report.findings` (pruning curves over seeds, headline findings),
`headcount.report.figures` (the figures and their saving), `headcount.report.render` (the
document: `Section`, `Block`, `Table`, rendered as Markdown and HTML),
`headcount.report.sections` (the sections on the reference study) and
`headcount.report.companion` (the sections and findings of the companion studies). This
module assembles them and re-exports their public names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

from headcount.io import write_atomic
from headcount.report.figures import (
    _Figures,
    correlation_points,
    figure_correlation,
    figure_curves,
    figure_drift,
    figure_freezing,
    figure_pruned_finetune,
    figure_recall,
)
from headcount.report.findings import (
    CurveGroup,
    CurvePoint,
    _findings,
    curve_groups,
    headline_findings,
)
from headcount.report.format import _clean, _text
from headcount.report.render import Block, Section, Table, _md, render_html, render_markdown
from headcount.report.sections import (
    _config_section,
    _correlation_section,
    _curves_section,
    _drift_section,
    _environment_section,
    _finetune_section,
    _freezing_section,
    _pruned_finetune_section,
    _recall_section,
    _tables_section,
)

__all__ = [
    "Block", "CurveGroup", "CurvePoint", "Section", "Table", "build_sections",
    "correlation_points", "curve_groups", "figure_correlation", "figure_curves",
    "figure_drift", "figure_freezing", "figure_pruned_finetune", "figure_recall",
    "headline_findings", "render_html", "render_markdown", "write_report",
]


def build_sections(run_dir: Path, tables: dict, meta: dict, figures: _Figures) -> list[Section]:
    """The report's sections, in order; one that fails is left out and noted."""
    from headcount.report.companion import SECTIONS

    builders: list[tuple[str, Callable[[], Section | None]]] = [
        ("pruning curves (downstream)",
         lambda: _curves_section(tables, run_dir, figures, "downstream")),
        ("pruning curves (masked LM)",
         lambda: _curves_section(tables, run_dir, figures, "pretrain")),
        ("recall", lambda: _recall_section(tables, run_dir, figures)),
        ("drift", lambda: _drift_section(tables, run_dir, figures)),
        ("correlation", lambda: _correlation_section(tables, run_dir, figures)),
        ("freezing", lambda: _freezing_section(tables, run_dir, figures)),
        ("pruned fine-tuning", lambda: _pruned_finetune_section(tables, run_dir, figures)),
        *((what, partial(build, tables, run_dir, figures)) for what, build in SECTIONS),
        ("fine-tuned models", lambda: _finetune_section(tables, run_dir)),
        ("configuration", lambda: _config_section(meta)),
        ("environment", lambda: _environment_section(meta)),
        ("notes", lambda: Section("notes", "Notes", bullets=[
            str(note) for note in meta.get("notes")]) if meta.get("notes") else None),
        ("tables", lambda: _tables_section(tables, run_dir)),
    ]
    sections = []
    for what, build in builders:
        try:
            section = build()
        except Exception as error:  # one bad table must not cost the whole report
            figures.problems.append(f"section on {what} left out: "
                                    f"{type(error).__name__}: {error}")
            continue
        if section is not None:
            sections.append(section)
    return sections


def write_report(run_dir: str | Path, tables: dict[str, list[dict]],
                 meta: dict) -> dict[str, object]:
    """Write RUN_DIR/figures/*.{png,svg}, RUN_DIR/report.md and RUN_DIR/report.html from the
    study's tables; returns {"html": path, "markdown": path, "figures": [paths]}. A figure
    or finding that cannot be made is left out and listed under "Report warnings" (and
    warned about), so that one bad table does not cost the report of a whole study."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = _clean(tables)
    meta = meta or {}
    problems: list[str] = []
    findings = _findings(tables, problems)
    figures = _Figures(run_dir, problems)
    sections = build_sections(run_dir, tables, meta, figures)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    name = str(meta.get("name") or run_dir.name)
    title = f"headcount study: {name}"
    environment = meta.get("environment") or {}
    subtitle = " · ".join(part for part in (
        f"finished {environment['finished']}" if environment.get("finished") else "",
        _text(environment.get("device")) if environment.get("device") else "",
        "reproducing Chiang & Chen, “Why Can You Lay Off Heads? Investigating How BERT Heads "
        "Transfer”") if part)
    markdown = render_markdown(title, findings, sections, problems)
    if subtitle:
        markdown = markdown.replace("\n", f"\n\n{_md(subtitle)}\n", 1)
    md_path = write_atomic(run_dir / "report.md", markdown)
    html_path = write_atomic(run_dir / "report.html",
                             render_html(title, findings, sections, problems, subtitle))
    return {"html": html_path, "markdown": md_path, "figures": list(figures.saved)}
