"""The companion study of importance estimators: each cheaper estimator (gradient,
attention entropy and confidence, weight magnitude) against exact ablation, by rank
agreement and by pruning curves.

Example:
    >>> estimators_findings({})
    []
"""

from __future__ import annotations

from pathlib import Path

from headcount.report.canvas import FigureSaver
from headcount.report.companion.orders import (
    figure_orders,
    order_curve_table,
    order_sort,
    orders_table,
)
from headcount.report.findings import Finder
from headcount.report.format import (
    as_text,
    fmt,
    fmt_ms,
    fmt_sig,
    fmt_stats,
    group_rows,
    mean_of,
    mean_std_count,
    table_rows,
    unique,
)
from headcount.report.render import Block, Section, Table, table_links
from headcount.report.verdicts import (
    caveats,
    inconclusive_note,
    masked_lm_problem,
    task_problem,
)


def _agreement_table(rows: list[dict]) -> Table:
    """Per model, task and estimator: rank and linear agreement with ablation, and time."""
    table = Table(["model", "task", "estimator", "seeds", "Spearman ρ vs ablation",
                   "Pearson r", "seconds", "ablation seconds"], [],
                  "Mean ± std over seeds; task mlm = the masked LM (pre-train task).")
    for key, members in sorted(group_rows(rows, "model", "task", "estimator").items(),
                               key=lambda item: (str(item[0][0]), str(item[0][1]),
                                                 order_sort(str(item[0][2])))):
        rho = mean_std_count(r.get("spearman_rho") for r in members)
        table.rows.append([as_text(key[0]), as_text(key[1]), as_text(key[2]), str(rho[2]),
                           fmt_ms(*rho), fmt_stats(r.get("pearson_r") for r in members),
                           fmt_sig(mean_of(r.get("seconds") for r in members), 2),
                           fmt_sig(mean_of(r.get("reference_seconds") for r in members), 2)])
    return table


def estimators_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "estimator_agreement")
    curves = order_curve_table(tables)
    has_curves = any(k.family == "estimator" for k in curves)
    if not rows and not has_curves:
        return None
    section = Section("estimators", "Importance estimators against exact ablation", [
        "Exact ablation is the ground truth of a head's importance: the mean loss increase "
        "when that head alone is switched off (layers × heads evaluations). Each cheaper "
        "estimator (gradient = Michel et al.'s |∂L/∂ξ|; attention entropy, as focus = ln K − H; "
        "confidence = mean maximum attention weight, Voita et al.; weight magnitude of the "
        "head's projections) is computed on the same examples and compared with it by "
        "Spearman's ρ over all heads (raw scores). Time: wall seconds of each estimate, "
        "including loading the model."])
    if rows:
        section.paragraphs += caveats({
            f"{model} on the masked LM": masked_lm_problem(table_rows(tables, "curves"), model)
            for (model, task) in group_rows(rows, "model", "task") if task == "mlm"})
        section.tables.append(_agreement_table(rows))
    if has_curves:
        for model in unique(k.model for k in curves if k.family == "estimator"):
            stem = figures.save(f"estimator-curves-{model}",
                                lambda m=model: figure_orders(curves, m, "estimator"))
            section.blocks.append(Block(
                f"{model}: pruning by each estimator", stem,
                f"{model}: heads pruned least important first by each estimator's raw "
                "scores; importance (black) is the gradient estimator with the study's "
                "first normalisation.", [orders_table(curves, model, "estimator")]))
    section.links = table_links(run_dir, "estimator_agreement", "estimator_scores")
    return section


def estimators_findings(tables: dict) -> list[str]:
    sentences = []
    rows = table_rows(tables, "estimator_agreement")
    for (model, task), members in group_rows(rows, "model", "task").items():
        by_estimator = {key[0]: mean_of(r.get("spearman_rho") for r in group)
                        for key, group in group_rows(members, "estimator").items()}
        ranked = sorted((e for e in by_estimator if by_estimator[e] is not None),
                        key=lambda e: -by_estimator[e])
        if not ranked:
            continue
        what = "the masked LM" if task == "mlm" else task
        best = by_estimator[ranked[0]]
        verdict = (f"{ranked[0]} ranks heads most like ablation" if best > 0 else
                   f"no estimator ranks heads like ablation (the best, {ranked[0]}, has "
                   f"ρ = {fmt(best, 2)})")
        problem = task_problem(table_rows(tables, "curves"), model, task)
        sentences.append(
            f"{model} on {what}: Spearman ρ with exact ablation: "
            + ", ".join(f"{e} {fmt(by_estimator[e], 2)}" for e in ranked)
            + f"; {verdict}" + inconclusive_note(problem) + ".")
    return sentences


SECTION = ("importance estimators", estimators_section)
FINDER = Finder("Importance estimators vs exact ablation", estimators_findings)
