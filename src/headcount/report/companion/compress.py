"""Compression to a FLOPs budget (Kwon et al. 2022, on headcount's exact Fisher): the
metric against the FLOPs kept and against the measured speed-up, for heads alone in
importance order, compress's search alone, the full method, and the full method on the
batch-summed Fisher of Kwon et al.'s code.

Example:
    >>> compress_findings({})
    []
"""

from __future__ import annotations

from pathlib import Path

from headcount.plotting import mpl_text
from headcount.report.canvas import FigureSaver, finish_panel, legend_below, new_figure
from headcount.report.findings import Finder
from headcount.report.format import (
    as_number,
    as_text,
    fmt,
    fmt_ms,
    group_rows,
    mean_std_count,
    pct,
    table_rows,
    unique,
)
from headcount.report.render import Block, Section, Table, table_links

METHOD_LABELS = {
    "heads-only": "heads alone, importance order",
    "search": "search (Fisher), no rearrangement or tuning",
    "compress": "compress (search, rearrangement, tuning)",
    "compress-batch": "compress on the batch-summed Fisher",
}
METHOD_STYLES = {"heads-only": ("tab:gray", "s"), "search": ("tab:orange", "^"),
                 "compress": ("tab:blue", "o"), "compress-batch": ("tab:purple", "v")}


def _summary(rows: list[dict]) -> dict[tuple, dict]:
    """(model, task, method, budget) -> mean ± std over seeds of relative, FLOPs kept and
    speed-up (the unpruned row excluded)."""
    summary = {}
    for key, members in group_rows([r for r in rows if r.get("method") != "unpruned"],
                                   "model", "task", "method", "budget").items():
        summary[key] = {name: mean_std_count(r.get(name) for r in members)
                        for name in ("relative", "flops_kept", "speedup")}
    return summary


def figure_compress(summary: dict, model, task):
    """Relative metric against FLOPs kept (left) and against the measured speed-up
    (right), one line per method."""
    figure = new_figure(9.5, 4.2)
    left, right = figure.subplots(1, 2)
    handles = []
    for method, label in METHOD_LABELS.items():
        points = sorted((k[3], v) for k, v in summary.items()
                        if k[:3] == (model, task, method))
        if not points:
            continue
        colour, marker = METHOD_STYLES[method]
        relative = [v["relative"][0] for _, v in points]
        handle, = left.plot([v["flops_kept"][0] for _, v in points], relative, marker=marker,
                            color=colour, label=label)
        right.plot([v["speedup"][0] for _, v in points], relative, marker=marker,
                   color=colour)
        handles.append(handle)
    finish_panel(left, "against FLOPs", "share of the encoder's FLOPs kept",
                 "relative performance")
    finish_panel(right, "against measured latency", "speed-up (batch forward, measured)",
                 "relative performance")
    legend_below(figure, handles, 2)
    figure.suptitle(f"{mpl_text(model)} on {mpl_text(task)}: compressed without retraining")
    return figure


def compress_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "compress")
    if not rows:
        return None
    summary = _summary(rows)
    section = Section("compress", "Compression to a FLOPs budget (Kwon et al.)", [
        "Each fine-tuned model is compressed without retraining to each share of its "
        "encoder's FLOPs (at the calibration length): heads alone, least important first "
        "(the reference study's pruning; heads are about a third of the FLOPs, so it cannot "
        "reach small budgets); the mask search on the exact per-example Fisher of the head "
        "and feed-forward neuron masks; the full method (search, rearrangement of each "
        "layer's mask with its Fisher block, least-squares tuning of the kept units); and the "
        "full method on the Fisher of gradients summed over a batch, as in Kwon et al.'s "
        "code. Speed-ups are measured forward passes on this run's device against the "
        "unpruned model."])
    table = Table(["model", "task", "budget", "method", "seeds", "FLOPs kept", "relative",
                   "speed-up"], [], "Mean ± std over seeds.")
    for key, values in sorted(summary.items(), key=lambda item: (
            str(item[0][0]), str(item[0][1]), -float(item[0][3]),
            list(METHOD_LABELS).index(item[0][2]) if item[0][2] in METHOD_LABELS else 9)):
        model, task, method, budget = key
        table.rows.append([as_text(model), as_text(task), pct(as_number(budget)),
                           METHOD_LABELS.get(method, as_text(method)),
                           str(values["relative"][2]), fmt_ms(*values["flops_kept"]),
                           fmt_ms(*values["relative"]), fmt_ms(*values["speedup"])])
    for model, task in unique((k[0], k[1]) for k in summary):
        stem = figures.save(f"compress-{model}-{task}",
                            lambda m=model, t=task: figure_compress(summary, m, t))
        section.blocks.append(Block(f"{as_text(model)} on {as_text(task)}", stem,
                                    f"{model} on {task}: relative performance against FLOPs "
                                    "and measured speed-up, by method."))
    section.tables.append(table)
    section.links = table_links(run_dir, "compress")
    return section


def compress_findings(tables: dict) -> list[str]:
    """Per model and task, at the budget nearest 60%: what each method keeps."""
    sentences = []
    summary = _summary(table_rows(tables, "compress"))
    for model, task in unique((k[0], k[1]) for k in summary):
        budgets = sorted({float(k[3]) for k in summary if k[:2] == (model, task)})
        if not budgets:
            continue
        budget = min(budgets, key=lambda b: abs(b - 0.6))
        kept = {k[2]: v for k, v in summary.items()
                if k[:2] == (model, task) and float(k[3]) == budget}
        parts = [f"{METHOD_LABELS.get(method, method)} {fmt(kept[method]['relative'][0])}"
                 f" ({fmt(kept[method]['speedup'][0], 2)}x measured)"
                 for method in METHOD_LABELS if method in kept]
        sentences.append(f"{model} on {task} at {pct(budget)} of the FLOPs, relative "
                         f"performance: " + "; ".join(parts) + ".")
    return sentences


SECTION = ("compression", compress_section)
FINDER = Finder("Compression to a FLOPs budget (Kwon et al.)", compress_findings)
