"""Figures: pruning curves as in the reference study (Figures 1, 2 and 5).

Relative performance against the ratio of heads pruned; one dotted line per seed, one colour
per normalisation. Functions take `ax=None` and return the axes.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from headcount.errors import HeadcountError

FIGURE_FORMATS = (".png", ".svg", ".pdf")
NORMALIZATION_COLOURS = {"l1": "tab:blue", "l2": "tab:orange", "none": "tab:green"}
# Further colours when curves differ by how heads were ranked, not only by normalisation.
EXTRA_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def read_curve_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise HeadcountError(f"curve file not found: {path}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    needed = {"ratio_pruned", "relative", "metric", "main", "normalize", "seed", "task"}
    if not rows or not needed <= set(rows[0]):
        raise HeadcountError(f"{path} is not a headcount curve CSV (columns {sorted(needed)})")
    return rows


def plot_curves(rows: list[dict], ax=None, *, title: str | None = None):
    """Relative main-metric performance vs ratio pruned, a dotted line per seed and file,
    coloured by normalisation. `rows` may come from several curve files."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    lines = defaultdict(list)
    for row in rows:
        if row["main"] not in ("True", True):
            continue
        key = (row.get("source", ""), row["task"], row.get("rank_task", ""), row["normalize"],
               row.get("schedule", ""), row["seed"])
        lines[key].append((float(row["ratio_pruned"]), float(row["relative"])))
    if not lines:
        raise HeadcountError("no curve rows to plot")
    rankings = sorted({key[2] for key in lines})
    normalizations = sorted({key[3] for key in lines})
    colours: dict[tuple[str, str], str] = {}
    for key, points in sorted(lines.items()):
        rank_task, normalize = key[2], key[3]
        points.sort()
        group = (rank_task, normalize)
        label = None
        if group not in colours:
            spare = len(colours) % len(EXTRA_COLOURS)
            colours[group] = (NORMALIZATION_COLOURS.get(normalize, EXTRA_COLOURS[spare])
                              if len(rankings) == 1 else EXTRA_COLOURS[spare])
            label = f"{normalize} normalisation"
            if len(rankings) > 1:
                label = rank_task + (f" ({normalize})" if len(normalizations) > 1 else "")
        colour = colours[group]
        ax.plot([x for x, _ in points], [y for _, y in points], linestyle=":", marker=".",
                color=colour, alpha=0.85, label=label)
    tasks = sorted({key[1] for key in lines})
    seeds = sorted({key[5] for key in lines})
    metric = next(row["metric"] for row in rows if row["main"] in ("True", True))
    ax.set_xlabel("ratio of heads pruned")
    ax.set_ylabel(f"relative performance ({metric})")
    ax.set_xlim(0, 1)
    ax.axhline(0.9, color="gray", linewidth=0.8, linestyle="--")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{', '.join(tasks)}: {len(seeds)} seed(s), dotted line per seed")
    # Below the axes, so that it never hides a curve.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small",
              frameon=False)
    return ax


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


def read_recall_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise HeadcountError(f"recall file not found: {path}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    needed = {"x", "recall_mean", "recall_std", "threshold"}
    if not rows or not needed <= set(rows[0]):
        raise HeadcountError(f"{path} is not a headcount recall CSV (columns {sorted(needed)})")
    return rows


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
        colour = _TASK_COLOURS[index % len(_TASK_COLOURS)]
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


_TASK_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                 "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def plot_drift(records: list[dict], ax=None, *, title: str | None = None):
    """Figure 4: per-layer JS divergence (top: mean over heads solid, max dashed) and L2
    distance of the hidden states (bottom; layer 0 is the embeddings output) between a
    pre-trained and a fine-tuned model. `records` are drift.json records, e.g. several tasks
    and seeds: one colour per task, one line per record. `ax` is a pair (top, bottom) of
    axes or None; returns the pair."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

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
            colours[task] = _TASK_COLOURS[len(colours) % len(_TASK_COLOURS)]
            label = task + (f" ({runs[task]} runs)" if runs[task] > 1 else "")
        colour = colours[task]
        layers = list(range(1, len(record["js_layer_mean"]) + 1))
        mean = [float("nan") if v is None else v for v in record["js_layer_mean"]]
        peak = [float("nan") if v is None else v for v in record["js_layer_max"]]
        top.plot(layers, mean, color=colour, linestyle="-", marker=".", label=label)
        top.plot(layers, peak, color=colour, linestyle="--", alpha=0.8)
        bottom.plot([0, *layers], [record["l2_embeddings"], *record["l2"]], color=colour,
                    marker=".", label=label)
    top.set_ylabel("JS divergence (log2)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    styles = [Line2D([], [], color="black", linestyle="-", label="mean over heads"),
              Line2D([], [], color="black", linestyle="--", label="max over heads")]
    handles, _ = top.get_legend_handles_labels()
    top.legend(handles=handles + styles, fontsize="small")
    from matplotlib.ticker import MaxNLocator

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("layer (0 = embeddings)")
    bottom.set_ylabel("L2 distance of hidden states")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize="small")
    top.set_title(title or "pre-trained vs fine-tuned: attention (top) and feature (bottom) "
                  "drift", fontsize="medium")
    return top, bottom


def save_drift_figure(paths: list[str], out: str | Path) -> Path:
    """Plot the drift.json files at `paths` (Figure 4) into one figure file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headcount.drift import read_drift

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
        colour = _TASK_COLOURS[index % len(_TASK_COLOURS)]
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

    from headcount.correlation import read_correlation

    out = _check_figure_path(out)
    records = [record for path in paths for record in read_correlation(path)["records"]]
    figure, ax = plt.subplots(figsize=(6.4, 5.5))
    plot_correlation(records, ax)
    return _save_figure(figure, out)
