"""Figures: pruning curves as in the reference study (Figures 1, 2 and 5).

Relative performance against the ratio of heads pruned; one dotted line per seed, one colour
per normalisation. Functions take `ax=None` and return the axes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from headcount.errors import HeadcountError
from headcount.records import read_curve_csv, read_recall_csv

FIGURE_FORMATS = (".png", ".svg", ".pdf")
NORMALIZATION_COLOURS = {"l1": "tab:blue", "l2": "tab:orange", "none": "tab:green"}
# Further colours when curves differ by how heads were ranked, not only by normalisation.
EXTRA_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_curves(rows: list[dict], ax=None, *, title: str | None = None):
    """Relative main-metric performance vs ratio pruned, a dotted line per seed and file,
    coloured by normalisation (or by ranking, when curves were ranked differently). `rows`
    may come from several curve files. Several draws of one random or layer order (column
    `draw`) are drawn as their mean, solid, with a ±1 standard deviation band; each order
    has its own colour, marker and one legend entry."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    # key -> draw -> [(ratio requested, ratio pruned, relative)]
    lines: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["main"] not in ("True", True):
            continue
        order = str(row.get("order") or "importance")
        key = (row.get("source", ""), row["task"], row.get("rank_task", ""), row["normalize"],
               row.get("schedule", ""), row["seed"], order)
        pruned = float(row["ratio_pruned"])
        requested = row.get("ratio_requested")
        requested = pruned if requested in (None, "") else float(requested)
        lines[key][str(row.get("draw") or 0)].append((requested, pruned,
                                                      float(row["relative"])))
    if not lines:
        raise HeadcountError("no curve rows to plot")
    rankings = sorted({key[2] for key in lines})
    # Other orders always record "none": only importance curves tell normalisations apart.
    normalizations = sorted({key[3] for key in lines if key[6] == "importance"})
    by_importance = {key[6] for key in lines} == {"importance"}
    palette = (*EXTRA_COLOURS, "tab:blue", "tab:orange", "tab:green", "tab:gray")
    colours: dict[tuple[str, str], str] = {}
    banded = False
    for key, draws in sorted(lines.items()):
        rank_task, normalize, order = key[2], key[3], key[6]
        group = (rank_task, normalize)
        label = None
        if group not in colours:
            spare = palette[len(colours) % len(palette)]
            colours[group] = (NORMALIZATION_COLOURS.get(normalize, spare)
                              if len(rankings) == 1 and by_importance else spare)
            if order != "importance":
                label = f"{order} order" + (f", mean ± std of {len(draws)} draws"
                                            if len(draws) > 1 else "")
            elif len(rankings) > 1:
                label = ("" if by_importance else "importance on ") + rank_task
                label += f" ({normalize})" if len(normalizations) > 1 else ""
            else:
                label = f"{normalize} normalisation"
        colour = colours[group]
        marker = ORDER_MARKERS.get(order, ".")
        size = None if marker == "." else 4  # None: matplotlib's default
        if len(draws) == 1:
            points = sorted(next(iter(draws.values())))
            ax.plot([x for _, x, _ in points], [y for _, _, y in points], linestyle=":",
                    marker=marker, markersize=size, color=colour, alpha=0.85, label=label)
            continue
        banded = True
        xs, means, stds = _draw_statistics(draws)
        ax.plot(xs, means, linestyle="-", marker=marker, markersize=size, color=colour,
                label=label)
        ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                        [m + s for m, s in zip(means, stds, strict=True)], color=colour,
                        alpha=0.2, linewidth=0)
    tasks = sorted({key[1] for key in lines})
    seeds = sorted({key[5] for key in lines})
    metric = next(row["metric"] for row in rows if row["main"] in ("True", True))
    ax.set_xlabel("ratio of heads pruned")
    ax.set_ylabel(f"relative performance ({metric})")
    ax.set_xlim(0, 1)
    ax.axhline(0.9, color="gray", linewidth=0.8, linestyle="--")
    ax.grid(alpha=0.3)
    default = f"{', '.join(tasks)}: {len(seeds)} seed(s), dotted line per seed"
    if banded:
        default += "; mean ± std over draws"
    ax.set_title(title or default)
    # Below the axes, so that it never hides a curve.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small",
              frameon=False)
    return ax


# One marker per pruning order, so that orders stay apart in grey-scale prints too.
ORDER_MARKERS = {"importance": ".", "random": "o", "top": "^", "bottom": "v", "middle": "s",
                 "avoid-middle": "D", "consecutive": ">", "non-adjacent": "x"}


def _draw_statistics(draws: dict[str, list]) -> tuple[list[float], list[float], list[float]]:
    """Per requested ratio over draws: the mean ratio pruned, the mean relative performance
    and its sample standard deviation (0 where only one draw reached that ratio)."""
    import statistics

    at_ratio: dict[float, list[tuple[float, float]]] = defaultdict(list)
    for points in draws.values():
        for requested, pruned, relative in points:
            at_ratio[round(requested, 9)].append((pruned, relative))
    xs, means, stds = [], [], []
    for _, values in sorted(at_ratio.items()):
        relatives = [relative for _, relative in values]
        xs.append(statistics.fmean(pruned for pruned, _ in values))
        means.append(statistics.fmean(relatives))
        stds.append(statistics.stdev(relatives) if len(relatives) > 1 else 0.0)
    return xs, means, stds


def save_curve_figure(paths: list[str], out: str | Path) -> Path:
    """Plot the curve CSVs at `paths` into one figure file (PNG, SVG or PDF by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = _check_figure_path(out)
    rows = []
    for path in paths:
        for row in read_curve_csv(path):
            rows.append({**row, "source": str(path)})
    figure, ax = plt.subplots(figsize=(6.4, 5))
    plot_curves(rows, ax)
    return _save_figure(figure, out)


def plot_recall(curves: dict[str, list[dict]], ax=None):
    """Recall vs relative pre-train performance x (Figure 3): one line per recall CSV
    (label: its name), the mean over seeds with ± one standard deviation shaded."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 5))
    for index, (label, rows) in enumerate(curves.items()):
        x = [float(r["x"]) for r in rows]
        mean = [float(r["recall_mean"]) for r in rows]
        std = [float(r["recall_std"]) for r in rows]
        colour = TASK_COLOURS[index % len(TASK_COLOURS)]
        ax.plot(x, mean, color=colour, label=label)
        ax.fill_between(x, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)],
                        color=colour, alpha=0.2, linewidth=0)
    threshold = float(next(iter(curves.values()))[0]["threshold"])
    ax.set_xlabel("relative pre-train (masked LM) performance x")
    ax.set_ylabel(f"recall of heads needed for {threshold:.0%} downstream performance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return ax


def save_recall_figure(paths: list[str], out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = _check_figure_path(out)
    curves = {Path(path).stem: read_recall_csv(path) for path in paths}
    figure, ax = plt.subplots(figsize=(6.4, 5))
    plot_recall(curves, ax)
    return _save_figure(figure, out)


# Attention drift and its correlation with importance (Figures 4 and 6).


def _check_figure_path(out: str | Path) -> Path:
    """A figure path with a supported suffix in an existing directory, else HeadcountError."""
    out = Path(out)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise HeadcountError(
            f"--out {out}: unsupported figure format '{out.suffix}'; use one of "
            f"{', '.join(FIGURE_FORMATS)}"
        )
    if not out.parent.is_dir():
        raise HeadcountError(f"output directory does not exist: {out.parent}")
    return out


def _save_figure(figure, out: Path) -> Path:
    """Write `figure` beside `out`, then rename it into place (readers never see half)."""
    import matplotlib.pyplot as plt

    staging = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        figure.tight_layout()
        figure.savefig(staging, dpi=150)
        staging.replace(out)
    finally:
        plt.close(figure)
        staging.unlink(missing_ok=True)
    return out


TASK_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


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

    out = _check_figure_path(out)
    records = [read_drift(path) for path in paths]
    figure, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    plot_drift(records, axes)
    return _save_figure(figure, out)


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

    out = _check_figure_path(out)
    records = [record for path in paths for record in read_correlation(path)["records"]]
    figure, ax = plt.subplots(figsize=(6.4, 5.5))
    plot_correlation(records, ax)
    return _save_figure(figure, out)


# Figures from the study runner's tables (headcount.report.assemble): each figure saved as PNG and
# SVG, per-layer drift averaged over seeds, grouped bars, importance against JS divergence.


def save_figure_formats(figure, stem: str | Path,
                        suffixes: tuple[str, ...] = (".png", ".svg")) -> list[Path]:
    """Write `figure` as `stem` + each suffix (150 dpi): every file is first written beside
    its target, and all are renamed into place only once each has been written."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    staged: list[tuple[Path, Path]] = []
    try:
        for suffix in suffixes:
            out = _check_figure_path(stem.with_name(stem.name + suffix))
            staging = out.with_name(f".{out.name}.tmp{out.suffix}")
            staged.append((staging, out))
            metadata = {"Date": None} if suffix == ".svg" else None  # reproducible SVG
            figure.savefig(staging, dpi=150, bbox_inches="tight", metadata=metadata)
        for staging, out in staged:
            staging.replace(out)
    finally:
        plt.close(figure)
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
    return [out for _, out in staged]


def mpl_text(text) -> str:
    """`text` safe for a matplotlib label: no mathtext from a '$' in a task or model name."""
    return str(text).replace("$", r"\$")


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


def plot_grouped_bars(groups: list[str], series: dict[str, list[tuple[float, float] | None]],
                      ax=None, *, ylabel: str = "", title: str | None = None,
                      reference: float | None = 1.0, colours: dict[str, str] | None = None):
    """Grouped bars: one group per entry of `groups` (x-axis), one bar per series (legend),
    each (mean, std) drawn with a ± std error bar and its mean written above it; None
    leaves a gap. A grey line marks `reference` (None: no line). Returns the axes."""
    import matplotlib.pyplot as plt

    if not groups or not series:
        raise HeadcountError("no bars to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.5))
    width = 0.8 / len(series)
    tops = [0.0]
    for index, (name, values) in enumerate(series.items()):
        colour = (colours or {}).get(name, TASK_COLOURS[index % len(TASK_COLOURS)])
        offset = (index - (len(series) - 1) / 2) * width
        xs, heights, errors = [], [], []
        for position, value in enumerate(values):
            if value is None or value[0] is None:
                continue
            xs.append(position + offset)
            heights.append(value[0])
            errors.append(value[1] or 0.0)
        if not xs:
            continue
        bars = ax.bar(xs, heights, width * 0.92, yerr=errors, capsize=3, color=colour,
                      label=mpl_text(name), edgecolor="white", linewidth=0.5)
        ax.bar_label(bars, labels=[f"{h:.2f}" for h in heights], padding=2, fontsize=7.5)
        tops.extend(h + e for h, e in zip(heights, errors, strict=True))
    if reference is not None:
        ax.axhline(reference, color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)), [mpl_text(group) for group in groups])
    ax.set_ylabel(ylabel)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(max(tops), reference or 0) * 1.12)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=min(len(series), 4),
              fontsize="small", frameon=False)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


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
