"""The companion study of fine-tuning after pruning (Budhraja et al.): the model pruned in
each order, scored before and after fine-tuning it again, and how the importance lost with
the pruned heads is compensated by the remaining ones (in total and per layer).

Example:
    >>> order_finetune_findings({})
    []
"""

from __future__ import annotations

from pathlib import Path

from headcount.plotting import mpl_text
from headcount.report.canvas import (
    FigureSaver,
    finish_panel,
    legend_below,
    panel_rows_of_three,
)
from headcount.report.companion.orders import ORDER_STYLE, order_sort
from headcount.report.findings import Finder
from headcount.report.format import (
    MISSING,
    as_number,
    as_text,
    fmt,
    fmt_ms,
    fmt_stats,
    group_rows,
    mean_of,
    mean_std_count,
    models_in,
    pct,
    rows_of_model,
    table_rows,
    unique,
)
from headcount.report.render import Block, Section, Table, table_links
from headcount.report.verdicts import inconclusive_note, task_problem


def _finetune_summary(rows: list[dict]) -> dict[tuple, dict]:
    """(model, task, order, ratio) -> {stage: (mean, std, n)} of relative performance."""
    summary: dict[tuple, dict] = {}
    for key, members in group_rows(rows, "model", "task", "order", "ratio").items():
        summary[key] = {stage: mean_std_count(r.get("relative") for r in members
                                              if r.get("stage") == stage)
                        for stage in ("before", "after")}
    return summary


def _finetune_table(summary: dict[tuple, dict], compensation: dict[tuple, list]) -> Table:
    """Per model, task, order and ratio: relative performance before and after fine-tuning
    again, and how evenly the remaining heads' gain of importance is spread."""
    table = Table(["model", "task", "order", "ratio pruned", "seeds", "relative before",
                   "relative after", "heads left", "top-10% part of the gain", "Gini"], [],
                  "Mean ± std over seeds.")
    for key in sorted(summary, key=lambda k: (str(k[0]), str(k[1]), order_sort(str(k[2])),
                                              as_number(k[3]) or 0)):
        before, after = summary[key]["before"], summary[key]["after"]
        comp = compensation.get(key, [])
        heads = mean_of(r.get("heads_remaining") for r in comp)
        table.rows.append([
            as_text(key[0]), as_text(key[1]), as_text(key[2]), pct(float(key[3])),
            str(max(before[2], after[2])), fmt_ms(*before), fmt_ms(*after),
            MISSING if heads is None else str(round(heads)),
            fmt_stats(r.get("top10_share") for r in comp), fmt_stats(r.get("gini") for r in comp)])
    return table


def order_finetune_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "order_finetune")
    if not rows:
        return None
    summary = _finetune_summary(rows)
    compensation = group_rows(table_rows(tables, "compensation"), "model", "task", "order", "ratio")
    section = Section("order-finetune", "Fine-tuning after pruning, and compensation", [
        "The fine-tuned model with a share of its heads removed in each order, scored before "
        "and after fine-tuning it again with the same recipe (relative to the unpruned "
        "fine-tuned model). Compensation: the gradient importance of every remaining head "
        "is measured before and after that fine-tuning on the same examples, as its share of "
        "the total importance of the remaining heads (raw gradient importance shrinks with the "
        "loss for every head alike). How evenly the gain of share is spread: the part of the "
        "total gain carried by the top 10% of heads (10% if every head gains alike) and the "
        "Gini coefficient of the gains (0 if even, near 1 if one head takes it all)."])
    section.tables.append(_finetune_table(summary, compensation))
    layers = table_rows(tables, "compensation_layers")
    for model in models_in(layers):
        stem = figures.save(f"compensation-{model}",
                            lambda m=model: figure_compensation_layers(layers, m))
        if stem:
            section.blocks.append(Block(f"{model}: change per layer", stem,
                                        "Change of each layer's share of the total "
                                        "importance of the remaining heads after fine-tuning "
                                        "(mean over seeds), per order."))
    section.links = table_links(run_dir, "order_finetune", "compensation",
                                "compensation_layers")
    return section


def figure_compensation_layers(rows: list[dict], model):
    """One panel per task: the change of each layer's share of importance after fine-tuning
    the pruned model, one line per order and ratio (mean over seeds)."""
    of_model = [r for r in rows_of_model(rows, model)
                if as_number(r.get("share_change")) is not None]
    tasks = unique(r.get("task") for r in of_model)
    if not tasks:
        return None
    figure, axes, columns = panel_rows_of_three(len(tasks), height=3.4, extra=0.9, sharey=True)
    handles = {}
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        of_task = [r for r in of_model if r.get("task") == task]
        for (order, ratio), members in sorted(group_rows(of_task, "order", "ratio").items(),
                                              key=lambda item: order_sort(str(item[0][0]))):
            by_layer = {key[0]: rows for key, rows in group_rows(members, "layer").items()}
            layers = sorted(by_layer, key=lambda v: as_number(v) or 0)
            means = [mean_of(r.get("share_change") for r in by_layer[layer]) for layer in layers]
            colour, style = ORDER_STYLE.get(str(order), (None, "-"))
            label = f"{order}, {pct(float(ratio))} pruned"
            (line,) = ax.plot([float(v) for v in layers], means, marker="o", color=colour,
                              linestyle=style, label=mpl_text(label))
            handles.setdefault(mpl_text(label), line)
        ax.axhline(0, color="gray", linewidth=0.8)
        finish_panel(ax, mpl_text(task), "layer",
                     "change of the layer's share" if index % columns == 0 else "")
    legend_below(figure, list(handles.values()), 4)
    figure.suptitle(f"{mpl_text(model)}: compensation per layer after fine-tuning the pruned "
                    "model")
    return figure


def order_finetune_findings(tables: dict) -> list[str]:
    sentences = []
    summary = _finetune_summary(table_rows(tables, "order_finetune"))
    for (model, task, ratio), keys in group_rows(
            [{"model": k[0], "task": k[1], "ratio": k[3], "key": k} for k in summary],
            "model", "task", "ratio").items():
        parts = []
        for row in sorted(keys, key=lambda r: order_sort(str(r["key"][2]))):
            before, after = summary[row["key"]]["before"][0], summary[row["key"]]["after"][0]
            if before is not None and after is not None:
                parts.append(f"{row['key'][2]} {fmt(before)} → {fmt(after)}")
        if parts:
            sentences.append(f"{model} on {task}, {pct(float(ratio))} of heads pruned, "
                             f"relative performance before → after fine-tuning again: "
                             f"{'; '.join(parts)}" + _unlearned(tables, model, task) + ".")
    comp = table_rows(tables, "compensation")
    for (model, task), members in group_rows(comp, "model", "task").items():
        share = mean_std_count(r.get("top10_share") for r in members)
        gini = mean_std_count(r.get("gini") for r in members)
        if share[0] is None:
            continue
        sentences.append(
            f"Compensation ({model} on {task}, {len(members)} pruned models): after "
            f"fine-tuning, the top 10% of the remaining heads carry {pct(share[0])} of the "
            f"gain in share of importance, Gini {fmt(gini[0])} (10% and 0 if every head "
            f"gained alike)" + _unlearned(tables, model, task) + ".")
    return sentences


def _unlearned(tables: dict, model, task) -> str:
    """The note for a finding on `task` when the fine-tuned model has not learned it."""
    return inconclusive_note(task_problem(table_rows(tables, "curves"), model, task))


SECTION = ("fine-tuning after pruning", order_finetune_section)
FINDER = Finder("Fine-tuning after pruning and compensation", order_finetune_findings)
