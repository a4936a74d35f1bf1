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


def _curve_lines(rows: list[dict]) -> dict[tuple, dict[str, list]]:
    """(source, task, rank task, normalisation, schedule, seed, order) -> draw ->
    [(ratio requested, ratio pruned, relative)] of the main metric's rows."""
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
    return lines


class _CurveStyle:
    """One colour per (ranking, normalisation), and the legend label of its first line:
    normalisation colours when only the normalisation differs."""

    def __init__(self, keys):
        self.rankings = sorted({key[2] for key in keys})
        # Other orders always record "none": only importance curves tell normalisations apart.
        self.normalizations = sorted({key[3] for key in keys if key[6] == "importance"})
        self.by_importance = {key[6] for key in keys} == {"importance"}
        self.palette = (*EXTRA_COLOURS, "tab:blue", "tab:orange", "tab:green", "tab:gray")
        self.colours: dict[tuple[str, str], str] = {}

    def colour_and_label(self, key: tuple, draws: int) -> tuple[str, str | None]:
        rank_task, normalize, order = key[2], key[3], key[6]
        group = (rank_task, normalize)
        if group in self.colours:
            return self.colours[group], None
        spare = self.palette[len(self.colours) % len(self.palette)]
        self.colours[group] = (NORMALIZATION_COLOURS.get(normalize, spare)
                               if len(self.rankings) == 1 and self.by_importance else spare)
        if order != "importance":
            label = f"{order} order" + (f", mean ± std of {draws} draws" if draws > 1 else "")
        elif len(self.rankings) > 1:
            label = ("" if self.by_importance else "importance on ") + rank_task
            label += f" ({normalize})" if len(self.normalizations) > 1 else ""
        else:
            label = f"{normalize} normalisation"
        return self.colours[group], label


def _draw_curve(ax, draws: dict[str, list], order: str, colour: str, label) -> bool:
    """One curve: a dotted line, or with several draws their mean with a ±1 std band
    (then True)."""
    marker = ORDER_MARKERS.get(order, ".")
    size = None if marker == "." else 4  # None: matplotlib's default
    if len(draws) == 1:
        points = sorted(next(iter(draws.values())))
        ax.plot([x for _, x, _ in points], [y for _, _, y in points], linestyle=":",
                marker=marker, markersize=size, color=colour, alpha=0.85, label=label)
        return False
    xs, means, stds = _draw_statistics(draws)
    ax.plot(xs, means, linestyle="-", marker=marker, markersize=size, color=colour,
            label=label)
    ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)], color=colour,
                    alpha=0.2, linewidth=0)
    return True


def plot_curves(rows: list[dict], ax=None, *, title: str | None = None):
    """Relative main-metric performance vs ratio pruned, a dotted line per seed and file,
    coloured by normalisation (or by ranking, when curves were ranked differently). `rows`
    may come from several curve files. Several draws of one random or layer order (column
    `draw`) are drawn as their mean, solid, with a ±1 standard deviation band; each order
    has its own colour, marker and one legend entry."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    lines = _curve_lines(rows)
    style = _CurveStyle(lines)
    banded = False
    for key, draws in sorted(lines.items()):
        colour, label = style.colour_and_label(key, len(draws))
        banded |= _draw_curve(ax, draws, key[6], colour, label)
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

    out = check_figure_path(out)
    rows = []
    for path in paths:
        for row in read_curve_csv(path):
            rows.append({**row, "source": str(path)})
    figure, ax = plt.subplots(figsize=(6.4, 5))
    plot_curves(rows, ax)
    return save_figure(figure, out)


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

    out = check_figure_path(out)
    curves = {Path(path).stem: read_recall_csv(path) for path in paths}
    figure, ax = plt.subplots(figsize=(6.4, 5))
    plot_recall(curves, ax)
    return save_figure(figure, out)


# Attention drift and its correlation with importance (Figures 4 and 6).


def check_figure_path(out: str | Path) -> Path:
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


def save_figure(figure, out: Path) -> Path:
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
            out = check_figure_path(stem.with_name(stem.name + suffix))
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


