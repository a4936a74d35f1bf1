"""Figures of the drift analyses: attention (JS) and feature (L2) drift per layer, and the
correlation of head importance with attention drift. Functions take `ax=None` and return
the axes; `save_*` write a figure file from record files."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from headcount.errors import HeadcountError
from headcount.plotting import SEED_MARKERS, TASK_COLOURS, check_figure_path, mpl_text, save_figure


def plot_drift(records: list[dict], ax=None, *, title: str | None = None):
    """Figure 4: per-layer JS divergence (top: mean over heads solid, max dashed) and L2
    distance of the hidden states (bottom; layer 0 is the embeddings output) between a
    pre-trained and a fine-tuned model. `records` are drift.json records, e.g. several tasks
    and seeds: one colour per task, one line per record. `ax` is a pair (top, bottom) of
    axes or None; returns the pair."""
    import matplotlib.pyplot as plt

    if not records:
        raise HeadcountError("no drift records to plot")
    if ax is None:
        _, ax = plt.subplots(2, 1, figsize=(6.4, 6), sharex=True)
    top, bottom = ax
    colours: dict[str, str] = {}
    runs: dict[str, int] = defaultdict(int)
    for record in records:
        runs[record["task"]] += 1
    for record in records:
        task = record["task"]
        label = None
        if task not in colours:
            colours[task] = TASK_COLOURS[len(colours) % len(TASK_COLOURS)]
            label = task + (f" ({runs[task]} runs)" if runs[task] > 1 else "")
        colour = colours[task]
        layers = list(range(1, len(record["js_layer_mean"]) + 1))
        mean = [float("nan") if v is None else v for v in record["js_layer_mean"]]
        peak = [float("nan") if v is None else v for v in record["js_layer_max"]]
        top.plot(layers, mean, color=colour, linestyle="-", marker=".", label=label)
        top.plot(layers, peak, color=colour, linestyle="--", alpha=0.8)
        bottom.plot([0, *layers], [record["l2_embeddings"], *record["l2"]], color=colour,
                    marker=".", label=label)
    _style_drift_axes(top, bottom, "layer (0 = embeddings)",
                      title or "pre-trained vs fine-tuned: attention (top) and feature "
                               "(bottom) drift")
    return top, bottom


def _style_drift_axes(top, bottom, xlabel: str, title: str) -> None:
    """Labels, limits and legends shared by the two Figure 4 variants."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    top.set_ylabel("JS divergence (log2)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    styles = [Line2D([], [], color="black", linestyle="-", label="mean over heads"),
              Line2D([], [], color="black", linestyle="--", label="max over heads")]
    handles, _ = top.get_legend_handles_labels()
    top.legend(handles=handles + styles, fontsize="small")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel(xlabel)
    bottom.set_ylabel("L2 distance of hidden states")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize="small")
    top.set_title(title, fontsize="medium")


def save_drift_figure(paths: list[str], out: str | Path) -> Path:
    """Plot the drift.json files at `paths` (Figure 4) into one figure file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headcount.records import read_drift

    out = check_figure_path(out)
    records = [read_drift(path) for path in paths]
    figure, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    plot_drift(records, axes)
    return save_figure(figure, out)


def _statistic(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot_correlation(records: list[dict], ax=None, *, title: str | None = None):
    """Figure 6: each head's JS divergence (y) against its importance (x), one colour per
    scores file, with the least-squares line of JS on importance and "r=…, ρ=…" in the
    legend. `records` are the entries of corr.json's "records". (The reference figure puts
    JS on the x-axis; here the axes follow the fitted line: JS as a function of importance.)
    Returns the axes."""
    import matplotlib.pyplot as plt

    if not records:
        raise HeadcountError("no correlation records to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    drift_tasks = sorted({str(record.get("drift_task")) for record in records})
    tasks = [record.get("scores_task") for record in records]
    for index, record in enumerate(records):
        colour = TASK_COLOURS[index % len(TASK_COLOURS)]
        xs, ys = record["points"]["importance"], record["points"]["js"]
        label = f"importance on {record.get('scores_task')}"
        if tasks.count(record.get("scores_task")) > 1:  # tell same-task files apart
            label += f" [{Path(str(record.get('scores'))).name}]"
        if len(drift_tasks) > 1:
            label += f", JS on {record.get('drift_task')}"
        label += (f" (r={_statistic(record.get('pearson_r'))}, "
                  f"ρ={_statistic(record.get('spearman_rho'))}, n={record.get('n')})")
        ax.scatter(xs, ys, s=14, color=colour, alpha=0.7, label=label)
        if record.get("slope") is not None and xs:
            low, high = min(xs), max(xs)
            ax.plot([low, high], [record["slope"] * low + record["intercept"],
                                  record["slope"] * high + record["intercept"]],
                    color=colour, linewidth=1.5)
    ax.set_xlabel("head importance")
    ax.set_ylabel("JS divergence (pre-trained vs fine-tuned)")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"JS divergence on {', '.join(drift_tasks)} vs head importance",
                 fontsize="medium")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small",
              frameon=False)
    return ax


def save_correlation_figure(paths: list[str], out: str | Path) -> Path:
    """Plot every record of the corr.json files at `paths` (Figure 6) into one figure file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headcount.records import read_correlation

    out = check_figure_path(out)
    records = [record for path in paths for record in read_correlation(path)["records"]]
    figure, ax = plt.subplots(figsize=(6.4, 5.5))
    plot_correlation(records, ax)
    return save_figure(figure, out)


def _finite_float(value) -> float | None:
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def drift_layer_means(rows: list[dict]) -> dict[str, list[dict]]:
    """Per task (first-appearance order), per layer: the mean over seeds of the per-seed
    `js_mean`, `js_max` and `l2` of drift-per-layer table rows, and the number of seeds."""
    values: dict[str, dict] = {}
    for row in rows:
        layers = values.setdefault(str(row.get("task")), {})
        entry = layers.setdefault(row.get("layer"), {"js_mean": [], "js_max": [], "l2": [],
                                                     "seeds": set()})
        entry["seeds"].add(row.get("seed"))
        for name in ("js_mean", "js_max", "l2"):
            number = _finite_float(row.get(name))
            if number is not None:
                entry[name].append(number)
    result: dict[str, list[dict]] = {}
    for task, layers in values.items():
        result[task] = []
        for layer in sorted(layers, key=lambda item: (_finite_float(item) is None,
                                                      _finite_float(item) or 0, str(item))):
            entry = layers[layer]
            result[task].append({
                "layer": layer,
                **{name: (sum(entry[name]) / len(entry[name]) if entry[name] else None)
                   for name in ("js_mean", "js_max", "l2")},
                "seeds": len(entry["seeds"]),
            })
    return result


def plot_drift_layers(rows: list[dict], axes=None, *, title: str | None = None):
    """Figure 4 from a drift-per-layer table (model, task, seed, layer, js_mean, js_max, l2):
    top, JS divergence per layer, the mean over heads solid and the max over heads dashed;
    bottom, the L2 distance of the hidden states. One colour per task; each value is the
    mean of the per-seed values. `axes` is a pair (top, bottom) or None; returns the pair."""
    import matplotlib.pyplot as plt

    means = drift_layer_means(rows)
    if not means:
        raise HeadcountError("no drift rows to plot")
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    top, bottom = axes

    def series(points, name):
        return ([p["layer"] for p in points if p[name] is not None],
                [p[name] for p in points if p[name] is not None])

    for index, (task, points) in enumerate(means.items()):
        colour = TASK_COLOURS[index % len(TASK_COLOURS)]
        seeds = max((p["seeds"] for p in points), default=0)
        label = mpl_text(task) + f" ({seeds} seed{'s' if seeds != 1 else ''})"
        top.plot(*series(points, "js_mean"), color=colour, linestyle="-", marker=".",
                 label=label)
        top.plot(*series(points, "js_max"), color=colour, linestyle="--", alpha=0.8)
        bottom.plot(*series(points, "l2"), color=colour, marker=".", label=label)
    _style_drift_axes(top, bottom, "layer",
                      title or "pre-trained vs fine-tuned: attention (top) and feature "
                               "(bottom) drift, mean over seeds")
    return top, bottom


def plot_importance_js(points: dict[str, tuple[list[float], list[float]]],
                       fits: dict[str, dict] | None = None, ax=None, *,
                       colour: str = "tab:blue", title: str | None = None,
                       xlabel: str = "head importance", legend: bool = True):
    """Figure 6 from tables: per seed (key of `points`), each head's importance (x) and JS
    divergence (y), one marker shape per seed, and its least-squares line of JS on importance
    dotted. `fits[seed]` may give slope, intercept, pearson_r and spearman_rho (else the line
    is fitted here and only r is shown); `legend=False` leaves the legend to the caller.
    Returns the axes."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb

    if not points:
        raise HeadcountError("no importance/JS points to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    shades = np.linspace(1.0, 0.55, num=max(len(points), 1))
    for index, (seed, (xs, ys)) in enumerate(points.items()):
        rgb = tuple(channel * shades[index] for channel in to_rgb(colour))
        marker = SEED_MARKERS[index % len(SEED_MARKERS)]
        fit = dict((fits or {}).get(seed) or {})
        if fit.get("slope") is None or fit.get("intercept") is None:
            fit.pop("slope", None)
        if fit.get("slope") is None and len(xs) >= 2 and len(set(xs)) > 1:
            slope, intercept = np.polyfit(xs, ys, 1)
            fit.update(slope=float(slope), intercept=float(intercept))
            if fit.get("pearson_r") is None:
                fit["pearson_r"] = float(np.corrcoef(xs, ys)[0, 1])
        label = f"seed {mpl_text(seed)} (n={len(xs)}"
        if fit.get("pearson_r") is not None:
            label += f", r={fit['pearson_r']:.2f}"
        if fit.get("spearman_rho") is not None:
            label += f", ρ={fit['spearman_rho']:.2f}"
        label += ")"
        ax.scatter(xs, ys, s=16, marker=marker, color=rgb, alpha=0.6, label=label,
                   linewidths=0)
        if fit.get("slope") is not None and xs:
            low, high = min(xs), max(xs)
            ax.plot([low, high], [fit["slope"] * low + fit["intercept"],
                                  fit["slope"] * high + fit["intercept"]],
                    color=rgb, linewidth=2.2, linestyle=":", zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("JS divergence (pre-trained vs fine-tuned)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    if legend:
        ax.legend(fontsize="x-small", loc="best")
    return ax
