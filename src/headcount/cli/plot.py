"""`headcount plot curve|recall|drift|correlation`: a figure from the files other commands
wrote (`headcount.plotting` or `headcount.drift_plots` reads them and saves the figure;
matplotlib loads only then)."""

from __future__ import annotations


def add_plot_command(commands) -> None:
    """Register `plot` and its figures on `commands` (the `headcount` subparsers)."""
    plot = commands.add_parser("plot", help="figures")
    kinds = plot.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    _add_figure(kinds, "curve", "plotting:save_curve_figure", "curves", "curve CSV files",
                help="relative performance vs ratio pruned")
    _add_figure(kinds, "recall", "plotting:save_recall_figure", "recalls",
                "recall CSV files (one line each)",
                help="recall of important heads vs x (Figure 3)")
    _add_figure(
        kinds, "drift", "drift_plots:save_drift_figure", "DRIFT",
        "drift.json files of `headcount compare` (tasks, seeds)",
        help="per-layer JS (mean, max) and L2 drift (Figure 4)",
        description="Top: per-layer JS divergence, mean over heads (solid) and max (dashed); "
                    "bottom: L2 distance of the hidden states per layer. One colour per task.",
    )
    _add_figure(
        kinds, "correlation", "drift_plots:save_correlation_figure", "CORR",
        "corr.json files of `headcount correlate`",
        help="JS divergence vs head importance, with fitted lines (Figure 6)",
        description="Scatter of each head's JS divergence against its importance, one colour "
                    "per scores file, with the least-squares line and r, rho in the legend. "
                    "Takes the corr.json files written by `headcount correlate`.",
    )


def _add_figure(kinds, name: str, save: str, inputs: str, inputs_help: str, **texts) -> None:
    """The parser of one figure: its input files (named `inputs` in the help), --out, and
    `save`, "module:function" of the headcount function that reads them and saves the
    figure (a name, so that matplotlib loads only when a figure is drawn); `texts`: the
    figure's help and description."""
    figure = kinds.add_parser(name, **texts)
    figure.add_argument("paths", nargs="+", metavar=inputs, help=inputs_help)
    figure.add_argument("--out", required=True, help="figure file (.png, .svg, .pdf)")
    figure.set_defaults(run=_save_figure, save=save)


def _save_figure(args) -> None:
    import importlib

    module, function = args.save.split(":")
    save = getattr(importlib.import_module(f"headcount.{module}"), function)
    print(f"wrote {save(args.paths, args.out)}")
