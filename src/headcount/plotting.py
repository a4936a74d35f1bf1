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

    out = Path(out)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise HeadcountError(
            f"--out {out}: unsupported figure format '{out.suffix}'; use one of "
            f"{', '.join(FIGURE_FORMATS)}"
        )
    if not out.parent.is_dir():
        raise HeadcountError(f"output directory does not exist: {out.parent}")
    rows = []
    for path in paths:
        for row in read_curve_csv(path):
            rows.append({**row, "source": str(path)})
    figure, ax = plt.subplots(figsize=(6.4, 5))
    plot_curves(rows, ax)
    figure.tight_layout()
    staging = out.with_name(f".{out.name}.tmp{out.suffix}")
    figure.savefig(staging, dpi=150)
    plt.close(figure)
    staging.replace(out)
    return out
