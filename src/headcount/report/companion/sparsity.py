"""The companion study of weight-magnitude pruning (Gordon et al.): the encoder's smallest
weights set to zero, before or after fine-tuning, against the unpruned model.

Example:
    >>> sparsity_findings({})
    []
"""

from __future__ import annotations

from pathlib import Path

from headcount.plotting import TASK_COLOURS, mpl_text
from headcount.report.aggregate import retained
from headcount.report.canvas import FigureSaver, finish_panel, panel_rows_of_three
from headcount.report.findings import Finder
from headcount.report.format import (
    RETAIN,
    as_number,
    as_text,
    fmt,
    fmt_ms,
    group_rows,
    is_main,
    mean_std_count,
    pct,
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


def _sparsity_summary(rows: list[dict]) -> dict[tuple, dict[float, dict]]:
    """(model, task, setting, metric) -> {sparsity: {value, relative, loss, achieved}}."""
    out: dict[tuple, dict[float, dict]] = {}
    rows = [row for row in rows if is_main(row)]
    for key, members in group_rows(rows, "model", "task", "setting", "metric").items():
        points = {}
        for (level,), at in group_rows(members, "sparsity_requested").items():
            if as_number(level) is None:
                continue
            points[float(level)] = {
                "value": mean_std_count(r.get("value") for r in at),
                "relative": mean_std_count(r.get("relative") for r in at),
                "loss": mean_std_count(r.get("mean_loss") for r in at),
                "achieved": mean_std_count(r.get("sparsity_achieved") for r in at)[0]}
        if points:
            out[key] = dict(sorted(points.items()))
    return out


def _masked_lm_panel(ax, curves: list[dict], keys: list[tuple]) -> None:
    """The pre-trained model's panel: relative masked-LM metric per key, and the masked-LM
    loss (of the first) on a twin axis."""
    for key, points in zip(keys, curves, strict=True):
        xs = list(points)
        ax.plot(xs, [points[x]["relative"][0] for x in xs], marker="o",
                label=f"relative {mpl_text(key[3])}")
    twin = ax.twinx()
    points = curves[0]
    twin.plot(list(points), [points[x]["loss"][0] for x in points], color="tab:red",
              marker="s", linestyle="--", label="masked-LM loss")
    twin.set_ylabel("masked-LM loss", color="tab:red")
    finish_panel(ax, "pre-trained model, masked LM", "sparsity of encoder weights",
                 "relative recall@1")
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], loc="lower left",
              fontsize=8)


def figure_sparsity(summary: dict, model):
    """One panel for the pre-trained model (masked LM, with its loss) and one per task:
    relative performance against the sparsity of the encoder's weights, per setting."""
    keys = [k for k in summary if k[0] == model]
    if not keys:
        return None
    mlm = [k for k in keys if k[1] == "mlm"]
    tasks = unique(k[1] for k in keys if k[1] != "mlm")
    panels = (1 if mlm else 0) + len(tasks)
    figure, axes, _ = panel_rows_of_three(panels, height=3.6, extra=0.9)
    if mlm:
        _masked_lm_panel(axes[0], [summary[key] for key in mlm], mlm)
    index = 1 if mlm else 0
    for offset, task in enumerate(tasks):
        ax = axes[index + offset]
        for colour, key in zip(TASK_COLOURS, [k for k in keys if k[1] == task], strict=False):
            points = summary[key]
            xs = list(points)
            means = [points[x]["relative"][0] for x in xs]
            ax.plot(xs, means, marker="o", color=colour, label=mpl_text(key[2]))
        ax.axhline(RETAIN, color="gray", linestyle="--", linewidth=0.8)
        finish_panel(ax, mpl_text(task), "sparsity of encoder weights", "relative performance")
        ax.legend(fontsize=8, loc="lower left")
    figure.suptitle(f"{mpl_text(model)}: weight-magnitude pruning (mean over seeds)")
    return figure


def sparsity_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "sparsity")
    if not rows:
        return None
    summary = _sparsity_summary(rows)
    section = Section("sparsity", "Weight-magnitude pruning (Gordon et al.)", [
        "Unstructured magnitude pruning of the encoder's linear weights (the smallest |w| set "
        "to zero, globally or per matrix as configured). Pre-trained: the masked-LM loss and "
        "recall@1 of the pre-trained model at each sparsity. Pruned before fine-tuning: the "
        "pre-trained model pruned, then fine-tuned with the pruned weights held at zero. "
        "Pruned after fine-tuning: the fine-tuned model pruned, without further training. "
        "Relative to the unpruned model (sparsity 0)."])
    section.paragraphs += caveats({
        f"{key[0]} on the masked LM": masked_lm_problem(table_rows(tables, "curves"), key[0])
        for key in summary if key[1] == "mlm"})
    table = Table(["model", "task", "setting", "metric", "sparsity", "achieved", "value",
                   "relative", "loss"], [], "Mean ± std over seeds.")
    for key, points in summary.items():
        for level, point in points.items():
            table.rows.append([*(as_text(part) for part in key), pct(level),
                               fmt(point["achieved"], 4),
                               fmt_ms(*point["value"]), fmt_ms(*point["relative"]),
                               fmt_ms(*point["loss"])])
    for model in unique(k[0] for k in summary):
        stem = figures.save(f"sparsity-{model}", lambda m=model: figure_sparsity(summary, m))
        section.blocks.append(Block(as_text(model), stem,
                                    f"{model}: performance against weight sparsity."))
    section.tables.append(table)
    section.links = table_links(run_dir, "sparsity")
    return section


def sparsity_findings(tables: dict) -> list[str]:
    sentences = []
    summary = _sparsity_summary(table_rows(tables, "sparsity"))
    for key, points in summary.items():
        model, task, setting, metric = key
        relative = {level: p["relative"][0] for level, p in points.items()
                    if p["relative"][0] is not None}
        if len(relative) < 2:
            continue
        kept, below = retained(relative.items(), RETAIN)
        what = "masked LM" if task == "mlm" else task
        if not kept:  # below from the first level after 0: it did not keep it at all
            sentence = (f"{model}, {what} ({setting}): {metric} is below {pct(RETAIN)} of "
                        f"the unpruned model already at {pct(below)} sparsity")
        elif below is None:
            sentence = (f"{model}, {what} ({setting}): {metric} stays ≥ {pct(RETAIN)} of the "
                        f"unpruned model at every level measured (up to {pct(kept)} "
                        "sparsity)")
        else:
            sentence = (f"{model}, {what} ({setting}): {metric} stays ≥ {pct(RETAIN)} of the "
                        f"unpruned model up to {pct(kept)} sparsity")
        top = max(relative)
        if len(relative) <= 4:  # few levels: name them all
            sentence += "; relative " + ", ".join(f"{fmt(value)} at {pct(level)}"
                                                  for level, value in relative.items())
        else:
            sentence += f"; at {pct(top)} sparsity it keeps {fmt(relative[top])} of it"
        loss = points[top]["loss"][0]
        base = points[min(points)]["loss"][0]
        if task == "mlm" and loss is not None and base is not None:
            sentence += f" (masked-LM loss {fmt(base)} → {fmt(loss)})"
        problem = task_problem(table_rows(tables, "curves"), model, task)
        sentences.append(sentence + inconclusive_note(problem) + ".")
    return sentences


SECTION = ("weight-magnitude pruning", sparsity_section)
FINDER = Finder("Weight-magnitude pruning (Gordon et al.)", sparsity_findings)
