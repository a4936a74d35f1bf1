"""Figures of the reference study, built from the study's tables: each `figure_*` returns a
matplotlib Figure, or None when there is nothing to draw (`headcount.report.canvas` saves
them).

Example:
    >>> figure_drift([], "bert-base-uncased") is None
    True
"""

from __future__ import annotations

import math

from headcount.drift_plots import plot_drift_layers, plot_importance_js
from headcount.plotting import (
    SEED_MARKERS,
    TASK_COLOURS,
    mpl_text,
    plot_curves,
    plot_grouped_bars,
    plot_recall,
)
from headcount.report.aggregate import (
    curve_kind,
    recall_points,
    recall_seeds,
    stage_order,
    usable_curve_rows,
)
from headcount.report.canvas import legend_below, new_figure, panel_grid
from headcount.report.format import (
    IMPORTANCE_KINDS,
    MLM_RETAIN,
    NORMALIZATION_ORDER,
    RECALL_TARGET,
    RETAIN,
    STAGE_COLOURS,
    as_number,
    as_text,
    fmt,
    group_rows,
    layer_sort_key,
    mean_of,
    mean_std_count,
    pct,
    pick_normalization,
    rows_of_model,
    seed_count,
    seeds_text,
    unique,
)


def figure_curves(rows: list[dict], model, curve: str = "downstream"):
    """Figure 1 (`curve="downstream"`: one panel per task) or Figure 2 (`"pretrain"`, the
    masked LM): relative main-metric performance against the ratio of heads pruned, one
    dotted line per seed, one colour per normalisation; None when there is nothing."""
    from matplotlib.lines import Line2D

    usable = [row for row in usable_curve_rows(rows_of_model(rows, model))
              if curve_kind(row) == curve and as_number(row.get("ratio_pruned")) is not None]
    if not usable:
        return None
    tasks = unique(row.get("task") for row in usable)
    width = 3.5 if len(tasks) > 2 else 4.0 if len(tasks) == 2 else 6.0
    figure = new_figure(width * min(4, len(tasks)) + 0.3,
                         3.5 * math.ceil(len(tasks) / 4) + 1.2)
    axes, columns = panel_grid(figure, len(tasks), sharey=True)
    handles: dict[str, object] = {}
    values = [float(row["relative"]) for row in usable]
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        task_rows = [{**row, "main": True, "rank_task": as_text(row.get("rank_task")),
                      "schedule": as_text(row.get("schedule")),
                      "normalize": as_text(row.get("normalize")), "seed": as_text(row.get("seed")),
                      "task": mpl_text(task), "metric": as_text(row.get("metric"))}
                     for row in usable if row.get("task") == task]
        metric = as_text(task_rows[0].get("metric"))
        seeds = seed_count(task_rows)
        name = "masked LM" if curve == "pretrain" and task == "mlm" else mpl_text(task)
        plot_curves(task_rows, ax, title=f"{name} ({mpl_text(metric)}), {seeds_text(seeds)}")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        if curve == "pretrain":
            ax.axhline(MLM_RETAIN, color="tab:red", linewidth=0.9, linestyle="-.")
        ylabel = "relative performance" if len(tasks) > 1 else f"relative {mpl_text(metric)}"
        ax.set_ylabel(ylabel if index % columns == 0 else "")
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    low = max(min(values) - 0.05, -0.5)
    high = min(max(max(values), 1.0) + 0.05, 1.6)
    axes[0].set_ylim(low, high)
    extra = [Line2D([], [], color="black", linestyle=":", marker=".", label="one line per seed"),
             Line2D([], [], color="gray", linestyle="--", linewidth=0.8,
                    label=f"{pct(RETAIN)} of the unpruned model")]
    if curve == "pretrain":
        extra.append(Line2D([], [], color="tab:red", linestyle="-.", linewidth=0.9,
                            label=f"{pct(MLM_RETAIN)} (the paper's guideline)"))
    legend = list(handles.values()) + extra
    legend_below(figure, legend, 2 + min(len(tasks), 3))
    what = ("downstream performance of the pruned fine-tuned model (Figure 1)"
            if curve == "downstream" else "masked-LM performance of the pruned model (Figure 2)")
    figure.suptitle(f"{mpl_text(model)}: relative {what}")
    return figure


def figure_recall(rows: list[dict], model):
    """Figure 3: recall (Eq. 5) against the relative masked-LM performance x, one line per
    task (normalisation l1 when present, else the first), ± std shaded; None when empty."""
    from matplotlib.lines import Line2D

    of_model = rows_of_model(rows, model)
    normalize = pick_normalization(row.get("normalize") for row in of_model)
    curves: dict[str, list[dict]] = {}
    for (task,), task_rows in group_rows([r for r in of_model if r.get("normalize") == normalize],
                                     "task").items():
        points = [{"x": x, "recall_mean": mean, "threshold": row.get("threshold") or RETAIN,
                   "recall_std": std or 0.0}
                  for x, mean, std, row in recall_points(task_rows) if mean is not None]
        if points:
            curves[mpl_text(task)] = points
    if not curves:
        return None
    figure = new_figure(6.4, 5.0)
    ax = figure.subplots()
    plot_recall(curves, ax)
    ax.axhline(RECALL_TARGET, color="gray", linewidth=0.8, linestyle="--")
    ax.axvline(MLM_RETAIN, color="tab:red", linewidth=0.9, linestyle="-.")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="gray", linestyle="--", linewidth=0.8,
                       label=f"recall {pct(RECALL_TARGET)}"),
                Line2D([], [], color="tab:red", linestyle="-.", linewidth=0.9,
                       label=f"x = {pct(MLM_RETAIN)} (the paper's guideline)")]
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    seeds = recall_seeds(of_model)
    ax.set_title(f"{mpl_text(model)}: recall of downstream-important heads (Eq. 5; "
                 f"{mpl_text(normalize)}),\nmean ± std over {seeds_text(seeds)} (Figure 3)")
    return figure


def figure_drift(rows: list[dict], model):
    """Figure 4: per-layer JS divergence (mean solid, max dashed) and L2 distance, one colour
    per task, each the mean of the per-seed values; None when empty."""
    of_model = [{**row, "task": as_text(row.get("task"))} for row in rows_of_model(rows, model)]
    if not of_model:
        return None
    figure = new_figure(7.6, 7.0)
    axes = figure.subplots(2, 1, sharex=True)
    plot_drift_layers(of_model, axes, title=f"{mpl_text(model)}: pre-trained vs fine-tuned "
                      "model per layer, mean over seeds (Figure 4)")
    return figure


def _importance_column(rows: list[dict]) -> str | None:
    for column in (*NORMALIZATION_ORDER, "raw"):
        if any(as_number(row.get(column)) is not None for row in rows):
            return column
    return None


def correlation_points(importance: list[dict], drift_heads: list[dict], model, task,
                       kind: str, column: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per seed of the drift table: (importance, JS) of each head present in both tables.
    Pre-train importance is the masked-LM one ("mlm"); with no importance rows for that seed,
    the mean over the seeds that have them. Importance with one layer but JS with several
    (ALBERT's shared heads): the JS of a head is its mean over the layer applications."""
    source = "mlm" if kind == "pretrain" else task
    scores = [row for row in importance
              if row.get("model") == model and row.get("task") == source]
    drift = [row for row in drift_heads if row.get("model") == model and row.get("task") == task]
    if not scores or not drift:
        return {}
    shared = (len({str(r.get("layer")) for r in scores}) == 1
              and len({str(r.get("layer")) for r in drift}) > 1)

    def key(row):
        return str(row.get("head")) if shared else (str(row.get("layer")), str(row.get("head")))

    points = {}
    for (seed,), seed_drift in group_rows(drift, "seed").items():
        seed_scores = [r for r in scores if str(r.get("seed")) == str(seed)] or scores
        values: dict = {}
        for row in seed_scores:
            values.setdefault(key(row), []).append(row.get(column))
        js: dict = {}
        for row in seed_drift:
            js.setdefault(key(row), []).append(row.get("js"))
        xs, ys = [], []
        for head, head_scores in values.items():
            x, y = mean_of(head_scores), mean_of(js.get(head, []))
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        if xs:
            points[as_text(seed)] = (xs, ys)
    return points


def figure_correlation(importance: list[dict], drift_heads: list[dict],
                       correlation: list[dict], model):
    """Figure 6: each head's JS divergence against its importance (l1 when present), one
    column per task, a row each for pre-train and downstream importance; markers and dotted
    least-squares lines per seed, r and ρ from the correlation table where it has them.
    None without importance or per-head drift rows."""
    column = _importance_column(rows_of_model(importance, model))
    tasks = unique(row.get("task") for row in rows_of_model(drift_heads, model))
    if column is None or not tasks:
        return None
    panels = []
    for kind in IMPORTANCE_KINDS:
        for task in tasks:
            points = correlation_points(importance, drift_heads, model, task, kind, column)
            if points:
                panels.append((kind, task, points))
    if not panels:
        return None
    kinds = unique(kind for kind, _, _ in panels)
    figure = new_figure(3.9 * len(tasks) + 0.3, 3.5 * len(kinds) + 0.9)
    grid = figure.subplots(len(kinds), len(tasks), squeeze=False)
    drawn = set()
    seeds: list[str] = []
    for kind, task, points in panels:
        row_index, column_index = kinds.index(kind), tasks.index(task)
        drawn.add((row_index, column_index))
        seeds.extend(seed for seed in points if seed not in seeds)
        fits = _correlation_fits(correlation, model, task, kind, column)
        _correlation_panel(grid[row_index][column_index], points, fits, task, kind, column,
                           column_index)
    for row_index, row in enumerate(grid):
        for column_index, ax in enumerate(row):
            if (row_index, column_index) not in drawn:
                ax.set_visible(False)
    _seed_legend(figure, seeds)
    figure.suptitle(f"{mpl_text(model)}: head importance vs JS divergence between the "
                    "pre-trained and the fine-tuned model (Figure 6)")
    return figure


def _correlation_fits(correlation: list[dict], model, task, kind: str,
                      column: str) -> dict[str, dict]:
    """Per seed: slope, intercept, r and ρ of the correlation table's row for the panel."""
    fits = {}
    for row in correlation:
        if (row.get("model") == model and row.get("task") == task
                and row.get("importance") == kind and row.get("normalize") == column):
            fits[as_text(row.get("seed"))] = {
                name: as_number(row.get(name))
                for name in ("slope", "intercept", "pearson_r", "spearman_rho")}
    return fits


def _correlation_panel(ax, points: dict, fits: dict, task, kind: str, column: str,
                       column_index: int) -> None:
    """One panel of Figure 6, titled with the mean r and ρ over seeds; a colour per task."""
    r, rho = _panel_correlation(points, fits)
    source = "masked-LM" if kind == "pretrain" else mpl_text(task)
    title = f"{mpl_text(task)}: {kind} importance"
    if r is not None:
        title += f"\nmean r = {fmt(r, 2)}" + (
            "" if rho is None else f", ρ = {fmt(rho, 2)}")
    plot_importance_js(points, fits, ax, legend=False,
                       colour=TASK_COLOURS[column_index % len(TASK_COLOURS)],
                       title=title, xlabel=f"{source} head importance ({column})")
    ax.set_ylabel("JS divergence" if column_index == 0 else "")
    ax.set_ylim(bottom=0)


def _seed_legend(figure, seeds: list[str]) -> None:
    """One legend below all panels: a marker per seed (as `plot_importance_js` draws them)
    and the dotted least-squares line."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="dimgray", marker=SEED_MARKERS[i % len(SEED_MARKERS)],
                      linestyle="", label=f"seed {mpl_text(seed)}")
               for i, seed in enumerate(seeds)]
    handles.append(Line2D([], [], color="dimgray", linestyle=":", linewidth=2.2,
                          label="least squares (JS on importance), per seed"))
    legend_below(figure, handles, 6)


def _panel_correlation(points: dict, fits: dict) -> tuple[float | None, float | None]:
    """Mean over seeds of Pearson's r and Spearman's ρ: from the correlation table where it
    has them, else computed from the points."""
    from scipy import stats

    r_values, rho_values = [], []
    for seed, (xs, ys) in points.items():
        fit = fits.get(seed) or {}
        r, rho = fit.get("pearson_r"), fit.get("spearman_rho")
        if (r is None or rho is None) and len(xs) >= 3 and len(set(xs)) > 1 \
                and len(set(ys)) > 1:
            r = float(stats.pearsonr(xs, ys)[0]) if r is None else r
            rho = float(stats.spearmanr(xs, ys)[0]) if rho is None else rho
        if as_number(r) is not None:
            r_values.append(r)
        if as_number(rho) is not None:
            rho_values.append(rho)
    return mean_of(r_values), mean_of(rho_values)


def _with_relative(rows: list[dict], model) -> list[dict]:
    return [row for row in rows_of_model(rows, model)
            if as_number(row.get("relative")) is not None]


def _bar(values) -> tuple[float, float] | None:
    """(mean, std) of one bar, std 0 for a single value; None without values."""
    mean, std, count = mean_std_count(values)
    return None if mean is None else (mean, std if count > 1 else 0.0)


def figure_freezing(rows: list[dict], model):
    """Relative performance with K frozen layers per task (mean ± std over seeds)."""
    of_model = _with_relative(rows, model)
    if not of_model:
        return None
    tasks = unique(row.get("task") for row in of_model)
    frozen = sorted(unique(row.get("freeze_layers") for row in of_model), key=layer_sort_key)
    series = {}
    for k in frozen:
        series[f"{as_text(k)} frozen layer{'s' if as_number(k) != 1 else ''}"] = [
            _bar(row.get("relative") for row in of_model
                 if row.get("task") == task and row.get("freeze_layers") == k)
            for task in tasks]
    metrics = {task: next(r.get("metric") for r in of_model if r.get("task") == task)
               for task in tasks}
    groups = [f"{task}\n({as_text(metrics[task])})" for task in tasks]
    figure = new_figure(max(5.5, 1.5 * len(tasks) * max(1, len(frozen) / 2) + 2.0), 4.6)
    ax = figure.subplots()
    plot_grouped_bars(groups, series, ax, ylabel="relative to full fine-tuning",
                      title=f"{mpl_text(model)}: fine-tuning with frozen layers, mean ± std "
                      f"over {seeds_text(seed_count(of_model))}")
    return figure


def figure_pruned_finetune(rows: list[dict], model):
    """Grouped bars per task (and ratio): unpruned, pruned-before and pruned-after, relative
    performance, mean ± std over seeds."""
    of_model = _with_relative(rows, model)
    if not of_model:
        return None
    keys = list(group_rows(of_model, "task", "ratio"))
    stages = stage_order(of_model)
    series = {}
    for stage in stages:
        series[as_text(stage)] = [
            _bar(row.get("relative") for row in of_model
                 if row.get("task") == task and row.get("ratio") == ratio
                 and row.get("stage") == stage)
            for task, ratio in keys]
    groups = [as_text(task) + ("" if as_number(ratio) is None
                               else f"\n{pct(as_number(ratio))} pruned")
              for task, ratio in keys]
    figure = new_figure(max(5.5, 1.4 * len(keys) * max(1, len(stages) / 2.5) + 2.0), 4.6)
    ax = figure.subplots()
    plot_grouped_bars(groups, series, ax, ylabel="relative performance (main metric)",
                      colours=STAGE_COLOURS,
                      title=f"{mpl_text(model)}: fine-tuning and pruning, mean ± std over "
                      f"{seeds_text(seed_count(of_model))}")
    return figure
