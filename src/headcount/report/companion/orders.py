"""The companion study of pruning orders (Budhraja et al.): heads removed in importance
order against random and layer-location orders. `order_curve_table` averages the order
curves (and, as the importance order, the study's main downstream curves) over seeds and
draws; the importance estimators' curves (`headcount.report.companion.estimators`) share it.

Example:
    >>> order_curve_table({})
    {}
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from headcount.plotting import mpl_text
from headcount.report.aggregate import curve_kind, retained, seed_areas
from headcount.report.canvas import (
    FigureSaver,
    finish_panel,
    legend_below,
    panel_rows_of_three,
)
from headcount.report.findings import Finder
from headcount.report.format import (
    MISSING,
    RETAIN,
    as_number,
    as_text,
    fmt,
    fmt_ms,
    group_rows,
    is_main,
    mean_std_count,
    pct,
    pick_normalization,
    table_rows,
    unique,
)
from headcount.report.render import Block, Section, Table, table_links
from headcount.report.verdicts import comparison_problem, inconclusive_note, task_problem

IMPORTANCE = "importance"
ORDER_STYLE = {  # colour, line style: importance solid black, random grey, layers coloured
    IMPORTANCE: ("black", "-"), "gradient": ("black", "-"), "random": ("tab:gray", "-"),
    "top": ("tab:blue", "--"),
    "bottom": ("tab:orange", "--"), "middle": ("tab:green", "--"),
    "avoid-middle": ("tab:red", "--"), "consecutive": ("tab:purple", ":"),
    "non-adjacent": ("tab:brown", ":"), "ablation": ("tab:cyan", "-."),
    "entropy": ("tab:olive", "-."), "confidence": ("tab:pink", "-."),
    "magnitude": ("darkgoldenrod", "-."),
}


# --------------------------------------------------------------------------------------
# Order curves: mean relative performance per (model, task, order) and ratio


class OrderCurve(NamedTuple):
    """What tells one averaged order curve from another (family: "order" for the pruning
    orders, "estimator" for the importance estimators' curves)."""

    model: object
    task: object
    order: object
    family: object


def order_curve_table(tables: dict) -> dict[OrderCurve, dict[float, tuple]]:
    """(model, task, order, family) -> {ratio requested: (mean relative, std, n, mean ratio
    pruned)} over seeds and draws. Importance order comes from the study's main downstream
    curves with the first normalisation (l1 when present)."""
    rows = [row for row in table_rows(tables, "order_curves") if is_main(row)]
    main = [row for row in table_rows(tables, "curves")
            if is_main(row) and curve_kind(row) == "downstream"]
    method = pick_normalization(row.get("normalize") for row in main)
    rows += [{**row, "order": IMPORTANCE, "family": "order"} for row in main
             if row.get("normalize") == method]
    curves: dict[OrderCurve, dict[float, tuple]] = {}
    for key, members in group_rows(rows, "model", "task", "order", "family").items():
        points = {}
        for (ratio,), at in group_rows(members, "ratio_requested").items():
            mean, std, count = mean_std_count(row.get("relative") for row in at)
            pruned, _, _ = mean_std_count(row.get("ratio_pruned") for row in at)
            if mean is not None and as_number(ratio) is not None:
                points[float(ratio)] = (mean, std, count, pruned)
        if points:
            curves[OrderCurve(*key)] = dict(sorted(points.items()))
    return curves


def curve_area(points: dict[float, tuple]) -> float:
    """Mean relative performance over the ratios measured (one number per curve)."""
    return sum(p[0] for p in points.values()) / len(points)


def order_sort(order: str) -> tuple:
    names = list(ORDER_STYLE)
    return (names.index(order) if order in names else len(names), order)


def figure_orders(curves: dict[OrderCurve, dict], model, family: str):
    """One panel per task: relative performance against the ratio of heads pruned, one line
    per order (mean over seeds and draws, ±1 std band), importance order in black."""
    keys = [k for k in curves if k.model == model and (k.family == family or k.order == IMPORTANCE)]
    tasks = unique(k.task for k in keys)
    if not tasks or len(keys) <= len(tasks):
        return None
    figure, axes, columns = panel_rows_of_three(len(tasks), height=3.6, extra=1.0, sharey=True)
    handles = {}
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        for key in sorted((k for k in keys if k.task == task), key=lambda k: order_sort(k.order)):
            order = key.order
            colour, style = ORDER_STYLE.get(order, (None, "-"))
            points = curves[key]
            xs = [p[3] if p[3] is not None else r for r, p in points.items()]
            means = [p[0] for p in points.values()]
            (line,) = ax.plot(xs, means, linestyle=style, color=colour, marker=".",
                              label=mpl_text(order), linewidth=1.6 if order == IMPORTANCE
                              else 1.2)
            stds = [p[1] or 0.0 for p in points.values()]
            if any(stds):
                ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                                [m + s for m, s in zip(means, stds, strict=True)],
                                color=line.get_color(), alpha=0.12, linewidth=0)
            handles.setdefault(mpl_text(order), line)
        ax.axhline(RETAIN, color="gray", linestyle="--", linewidth=0.8)
        finish_panel(ax, mpl_text(task), "ratio of heads pruned",
                     "relative performance" if index % columns == 0 else "")
    legend_below(figure, list(handles.values()), 5)
    what = "pruning orders" if family == "order" else "importance estimators"
    figure.suptitle(f"{mpl_text(model)}: {what} (mean over seeds; band ±1 std)")
    return figure


def orders_table(curves: dict, model, family: str) -> Table:
    keys = sorted((k for k in curves if k.model == model
                   and (k.family == family or k.order == IMPORTANCE)),
                  key=lambda k: (str(k.task), order_sort(k.order)))
    ratios = sorted({r for k in keys for r in curves[k]})
    middle = min(ratios, key=lambda r: abs(r - 0.5)) if ratios else None
    table = Table(["task", "order" if family == "order" else "ranked by", "curves",
                   f"≥ {pct(RETAIN)} up to", "mean relative (all ratios)",
                   f"relative at {pct(middle) if middle is not None else MISSING}"], [],
                  "Mean over seeds (and draws); the mean relative performance over all ratios "
                  "summarises a whole curve.")
    for key in keys:
        points = curves[key]
        kept = retained(((ratio, p[0]) for ratio, p in points.items()), RETAIN)[0]
        at_middle = points.get(middle)
        table.rows.append([
            as_text(key.task), as_text(key.order), str(max(p[2] for p in points.values())),
            MISSING if kept is None else pct(kept), fmt(curve_area(points)),
            MISSING if at_middle is None else fmt_ms(at_middle[0], at_middle[1], at_middle[2])])
    return table


def orders_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    curves = order_curve_table(tables)
    if not any(k.family == "order" and k.order != IMPORTANCE for k in curves):
        return None
    section = Section("orders", "Pruning orders: importance, random and layer location", [
        "Heads removed from the fine-tuned model in importance order (least important "
        "first, black) and in orders that ignore importance (Budhraja et al.): random (grey, "
        "several draws), by layer location (top = highest layers first, bottom, middle, "
        "avoid-middle = outermost layers first; whole layers in turn), a growing block of "
        "consecutive layers, and non-adjacent layers first. Same examples and ratios as the "
        "importance curves; no fine-tuning after pruning here (see the next section)."])
    for model in unique(k.model for k in curves):
        stem = figures.save(f"orders-{model}", lambda m=model: figure_orders(curves, m, "order"))
        section.blocks.append(Block(as_text(model), stem,
                                    f"{model}: relative performance by pruning order.",
                                    [orders_table(curves, model, "order")]))
    section.links = table_links(run_dir, "order_curves")
    return section


def orders_findings(tables: dict) -> list[str]:
    curves = order_curve_table(tables)
    sentences = []
    for (model, task), keys in group_rows(
            [{"model": k.model, "task": k.task, "key": k} for k in curves
             if k.family == "order"], "model", "task").items():
        by_order = {row["key"].order: curves[row["key"]] for row in keys}
        if IMPORTANCE not in by_order or len(by_order) < 2:
            continue
        areas = {order: curve_area(points) for order, points in by_order.items()}
        ranked = sorted(areas, key=lambda o: -areas[o])
        parts = [f"{order} {fmt(areas[order])}" for order in ranked]
        sentence = (f"{model} on {task}: mean relative performance over all pruning ratios "
                    f"by order: {', '.join(parts)}; importance order ranks "
                    f"{ranked.index(IMPORTANCE) + 1} of {len(ranked)}")
        unlearned = task_problem(table_rows(tables, "curves"), model, task)
        if unlearned:  # no order can be told from another on such a model
            sentences.append(sentence + inconclusive_note(unlearned) + ".")
            continue
        sentence += "."
        contrasts = [_contrast(tables, model, task, areas, a, b) for a, b in CONTRASTS
                     if a in areas and b in areas]
        if contrasts:
            sentence += " Budhraja et al.'s contrasts: " + "; ".join(contrasts) + "."
        sentences.append(sentence)
    return sentences


# Budhraja et al. found the first of each pair better on BERT.
CONTRASTS = (("avoid-middle", "middle"), ("non-adjacent", "consecutive"))


def _contrast(tables: dict, model, task, areas: dict, first: str, second: str) -> str:
    """'avoid-middle > middle (as they found)', marked inconclusive when the seeds (and
    draws) disagree by more than the two orders do."""
    better = areas[first] > areas[second]
    text = (f"{first} {'>' if better else '≤'} {second} "
            f"({'as they found' if better else 'unlike their BERT'})")
    rows = [row for row in table_rows(tables, "order_curves")
            if (row.get("model"), row.get("task")) == (model, task)]
    problem = comparison_problem(
        *(seed_areas([row for row in rows if row.get("order") == order])
          for order in (first, second)))
    return text + (f", inconclusive here: {problem}" if problem else "")


SECTION = ("pruning orders", orders_section)
FINDER = Finder("Pruning orders (Budhraja et al.)", orders_findings)
