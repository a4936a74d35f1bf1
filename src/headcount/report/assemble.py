"""Report stage of the study runner: figures, headline findings, report.md and report.html.

`write_report(run_dir, tables, meta)` turns the study's tidy tables (lists of dicts, one per
analysis; any may be missing or empty) into

- figures under RUN_DIR/figures/, each as PNG (150 dpi) and SVG: the pruning curves on the
  downstream tasks (Figure 1 of the reference study) and on the masked LM (Figure 2), the
  recall of important heads (Figure 3), attention and feature drift per layer (Figure 4),
  head importance against JS divergence (Figure 6), fine-tuning with frozen layers, and
  fine-tuning of pruned models;
- the opening table, "The paper's claims, and this run" (`claims`): each claim of the
  reference study and of the companion papers, the paper's number and setting beside this
  run's, and a verdict (agrees, disagrees, inconclusive here with the reason);
- headline findings: sentences whose numbers are computed from the tables
  (`headline_findings`), never typed in; a result that the run cannot support is marked
  inconclusive where it is stated, by the rules of `verdicts` (printed in the report's
  method notes);
- RUN_DIR/report.md and RUN_DIR/report.html (self-contained: inline CSS, figures by
  relative path), each with one section per figure, the aggregated numbers behind it and a
  link to the full table under RUN_DIR/tables/, then the configuration, the environment and
  the run's notes. A section whose table is missing or empty is left out.

Means and standard deviations are over seeds (population standard deviation, as in
`headcount.recall`). Relative performance thresholds follow the study: 90% of the unpruned
downstream performance (Figure 1), 75% of the masked-LM performance (the paper's guideline,
Figure 3) and recall 90%.

This module puts together the parts that the package's other modules make: the sections and
findings of the reference study (`sections`, `findings`) and of the companion studies
(`companion`), the closing sections (`appendix`), and the document (`render`); it
re-exports their public names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

from headcount.io import write_atomic
from headcount.report import appendix, claims, findings, sections
from headcount.report.aggregate import CurveGroup, CurvePoint, curve_groups
from headcount.report.canvas import FigureSaver
from headcount.report.companion import compress, estimators, finetune, orders, sparsity
from headcount.report.figures import (
    correlation_points,
    figure_correlation,
    figure_curves,
    figure_drift,
    figure_freezing,
    figure_pruned_finetune,
    figure_recall,
)
from headcount.report.format import as_text, clean_tables
from headcount.report.render import Block, Section, Table, render_html, render_markdown

__all__ = [
    "Block", "CurveGroup", "CurvePoint", "Section", "Table", "build_sections",
    "correlation_points", "curve_groups", "figure_correlation", "figure_curves",
    "figure_drift", "figure_freezing", "figure_pruned_finetune", "figure_recall",
    "headline_findings", "render_html", "render_markdown", "write_report",
]

# The companion studies, in report order (after the reference study's sections).
COMPANIONS = (orders, finetune, estimators, sparsity, compress)
# Every headline finding and every analysis section, in report order.
FINDERS = (*findings.FINDINGS, *(companion.FINDER for companion in COMPANIONS))
SECTIONS = (*sections.SECTIONS, *(companion.SECTION for companion in COMPANIONS))


def headline_findings(tables: dict[str, list[dict]]) -> list[str]:
    """Sentences with the study's main numbers, computed from `tables`; a finding whose
    table is missing or empty is left out (one that fails is left out with a warning).

    Example:
        >>> headline_findings({})
        []
    """
    problems: list[str] = []
    found = [sentence for _, sentence in findings.collect_findings(clean_tables(tables),
                                                                   problems, FINDERS)]
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    return found


def build_sections(run_dir: Path, tables: dict, meta: dict,
                   figures: FigureSaver) -> list[Section]:
    """The report's sections, in order; one that fails is left out and noted."""
    builders: list[tuple[str, Callable[[], Section | None]]] = [
        *((what, partial(build, tables, run_dir, figures)) for what, build in SECTIONS),
        ("method notes", partial(claims.method_notes_section, tables)),
        ("fine-tuned models", partial(appendix.finetune_section, tables, run_dir)),
        ("configuration", partial(appendix.config_section, meta)),
        ("environment", partial(appendix.environment_section, meta)),
        ("notes", partial(appendix.notes_section, meta)),
        ("tables", partial(appendix.tables_section, tables, run_dir)),
    ]
    built = []
    for what, build in builders:
        try:
            section = build()
        except Exception as error:  # one bad table must not cost the whole report
            figures.problems.append(f"section on {what} left out: "
                                    f"{type(error).__name__}: {error}")
            continue
        if section is not None:
            built.append(section)
    return built


def _subtitle(environment: dict) -> str:
    """When the run finished, on what device, and what it reproduces."""
    return " · ".join(part for part in (
        f"finished {environment['finished']}" if environment.get("finished") else "",
        as_text(environment.get("device")) if environment.get("device") else "",
        "reproducing Chiang & Chen, “Why Can You Lay Off Heads? Investigating How BERT Heads "
        "Transfer”") if part)


def write_report(run_dir: str | Path, tables: dict[str, list[dict]],
                 meta: dict) -> dict[str, object]:
    """Write RUN_DIR/figures/*.{png,svg}, RUN_DIR/report.md and RUN_DIR/report.html from the
    study's tables; returns {"html": path, "markdown": path, "figures": [paths]}. A figure
    or finding that cannot be made is left out and listed under "Report warnings" (and
    warned about), so that one bad table does not cost the report of a whole study."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = clean_tables(tables)
    meta = meta or {}
    problems: list[str] = []
    found = findings.collect_findings(tables, problems, FINDERS)
    figures = FigureSaver(run_dir, problems)
    lead = claims.claims_section(tables)
    built = build_sections(run_dir, tables, meta, figures)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    title = f"headcount study: {str(meta.get('name') or run_dir.name)}"
    subtitle = _subtitle(meta.get("environment") or {})
    md_path = write_atomic(run_dir / "report.md",
                           render_markdown(title, found, built, problems, subtitle, lead))
    html_path = write_atomic(run_dir / "report.html",
                             render_html(title, found, built, problems, subtitle, lead))
    return {"html": html_path, "markdown": md_path, "figures": list(figures.saved)}
