"""Figure canvases and files of the report: a new figure (`new_figure`), a grid of panels
(`panel_grid`), and `FigureSaver`, which builds each figure under the report's style and saves
it under RUN_DIR/figures as PNG and SVG (deterministic SVG: fixed hash salt, text as paths).

Example:
    >>> saver = FigureSaver(Path("runs/demo"), problems=[])
    >>> saver.save("drift-minilm", lambda: None) is None  # nothing to draw: no file
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from headcount.plotting import save_figure_formats
from headcount.report.format import FIGURE_DIR, slug

_RC = {
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12,
    "svg.hashsalt": "headcount", "svg.fonttype": "path",
}


def new_figure(width: float, height: float):
    """A matplotlib Figure (not pyplot's: nothing global to close) with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def panel_grid(figure, count: int, *, max_columns: int = 4, **kwargs):
    """`count` axes in rows of at most `max_columns` (the spare ones hidden), and the number
    of columns."""
    columns = min(max_columns, max(count, 1))
    rows = math.ceil(count / columns)
    axes = figure.subplots(rows, columns, squeeze=False, **kwargs)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return flat[:count], columns


def panel_rows_of_three(count: int, *, height: float, extra: float, **kwargs):
    """A figure of `count` panels, three to a row, each 4.2 wide and `height` tall (`extra`
    for the title and legend): (figure, axes, columns)."""
    figure = new_figure(4.2 * min(3, count) + 0.3, height * -(-count // 3) + extra)
    axes, columns = panel_grid(figure, count, max_columns=3, **kwargs)
    return figure, axes, columns


def finish_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and a light grid of one panel."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def legend_below(figure, handles: list, columns: int) -> None:
    """One legend for all panels, below them, in at most `columns` columns."""
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), columns),
                  frameon=False)


class FigureSaver:
    """Saves figures under RUN_DIR/figures as PNG + SVG, with distinct names; a figure that
    fails is noted in `problems`."""

    def __init__(self, run_dir: Path, problems: list[str]):
        self.run_dir = run_dir
        self.directory = run_dir / FIGURE_DIR
        self.problems = problems
        self.saved: list[Path] = []
        self.names: set[str] = set()

    def save(self, name: str, build: Callable[[], object]) -> str | None:
        """Build and save a figure; its path without suffix relative to the run dir, or None
        (no data, or the figure failed: noted in the report)."""
        import matplotlib

        try:
            with matplotlib.rc_context(_RC):
                figure = build()
                if figure is None:
                    return None
                name = slug(name)
                base, count = name, 2
                while name in self.names:
                    name, count = f"{base}-{count}", count + 1
                self.names.add(name)
                self.directory.mkdir(parents=True, exist_ok=True)
                self.saved.extend(save_figure_formats(figure, self.directory / name))
        except Exception as error:  # one bad figure must not cost the whole report
            self.problems.append(f"figure {name} left out: {type(error).__name__}: {error}")
            return None
        return f"{FIGURE_DIR}/{name}"
