"""Commands for attention/feature drift and its correlation with importance.

`add_drift_commands(commands, plot_kinds)` registers `compare`, `correlate`, `plot drift` and
`plot correlation` on the `headcount` parser (`commands`: its subparsers; `plot_kinds`: the
subparsers of `plot`). Thin, like `headcount.cli.app`: parse, call one library job, write its
record atomically, print a short summary; user mistakes are HeadcountErrors.
"""

from __future__ import annotations

import sys


def _drift_table(record: dict) -> str:
    rows = ["layer  JS mean  JS max   L2", f"{'emb':>5} {'':>8} {'':>7} "
            f"{record['l2_embeddings']:8.4f}"]
    for index, (mean, peak, l2) in enumerate(zip(record["js_layer_mean"],
                                                 record["js_layer_max"], record["l2"],
                                                 strict=True)):
        js = ("    none    none" if mean is None else f"{mean:8.4f} {peak:7.4f}")
        rows.append(f"{index + 1:>5} {js} {l2:8.4f}")
    return "\n".join(rows)


def _compare(args) -> None:
    from headcount.cli.app import data_options
    from headcount.io import check_output_path, write_json
    from headcount.jobs.analysis import drift_job

    check_output_path(args.out)
    record = drift_job(args.pretrained, args.finetuned, data_options(args),
                       device=args.device, progress=not args.quiet)
    write_json(args.out, record)
    if not args.quiet:
        print(_drift_table(record), file=sys.stderr)
    print(f"wrote JS divergence of {record['layers']}x{record['heads']} heads and L2 distance "
          f"of {record['layers']} layers over {record['num_examples']} examples to {args.out}")


def _correlate(args) -> None:
    from headcount.io import check_output_path, write_json
    from headcount.jobs.analysis import correlate_job

    check_output_path(args.out)
    record = correlate_job(args.scores, args.drift, raw=args.raw)
    write_json(args.out, record)

    def show(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    for entry in record["records"]:
        print(f"importance on {entry['scores_task']} vs JS on {entry['drift_task']} "
              f"(n={entry['n']}): r={show(entry['pearson_r'])} "
              f"(p={show(entry['pearson_p'], 2)}), rho={show(entry['spearman_rho'])} "
              f"(p={show(entry['spearman_p'], 2)}), js = {show(entry['slope'], 4)} * "
              f"importance + {show(entry['intercept'], 4)}")
    print(f"wrote {len(record['records'])} correlation record(s) to {args.out}")


def _plot_drift(args) -> None:
    from headcount.plotting import save_drift_figure

    print(f"wrote {save_drift_figure(args.drifts, args.out)}")


def _plot_correlation(args) -> None:
    from headcount.plotting import save_correlation_figure

    print(f"wrote {save_correlation_figure(args.correlations, args.out)}")


def add_drift_commands(commands, plot_kinds) -> None:
    """Register `compare` and `correlate` on `commands` (the subparsers of the `headcount`
    parser) and `drift` and `correlation` on `plot_kinds` (the subparsers of `plot`)."""
    from headcount.cli.app import add_data_flags

    compare = commands.add_parser(
        "compare", help="attention (JS) and feature (L2) drift between two checkpoints",
        description="Feed the same inputs of a task to a pre-trained and a fine-tuned model of "
                    "the same shape; per head, the Jensen-Shannon divergence (log2, in [0, 1]) "
                    "of their attention distributions, and per layer the L2 distance of their "
                    "hidden states; averaged over the real tokens of each example, then over "
                    "examples. Both load with eager attention and their own heads; inputs are "
                    "tokenised with PRETRAINED's tokenizer; labels are not used.",
    )
    compare.add_argument("pretrained", help="pre-trained checkpoint directory or hub name")
    compare.add_argument("finetuned", help="fine-tuned checkpoint directory or hub name")
    add_data_flags(compare, default_split="dev")
    compare.add_argument("--out", required=True, help="drift.json to write")
    compare.set_defaults(run=_compare)

    correlate = commands.add_parser(
        "correlate", help="correlation between head importance and attention drift",
        description="Pearson and Spearman correlation (with p-values) and the least-squares "
                    "line of JS divergence on importance, over the heads; one record per "
                    "--scores file. ALBERT's shared heads are paired with their JS averaged "
                    "over the layer applications.",
    )
    correlate.add_argument("--scores", action="append", required=True, metavar="SCORES",
                           help="scores.json of `headcount importance` (repeat for several, "
                                "e.g. pre-train and downstream importance)")
    correlate.add_argument("--drift", required=True, help="drift.json of `headcount compare`")
    correlate.add_argument("--raw", action="store_true",
                           help="use the raw importance instead of the normalised scores")
    correlate.add_argument("--out", required=True, help="corr.json to write")
    correlate.set_defaults(run=_correlate)

    plot_drift = plot_kinds.add_parser(
        "drift", help="per-layer JS (mean, max) and L2 drift (Figure 4)",
        description="Top: per-layer JS divergence, mean over heads (solid) and max (dashed); "
                    "bottom: L2 distance of the hidden states per layer. One colour per task.",
    )
    plot_drift.add_argument("drifts", nargs="+", metavar="DRIFT",
                            help="drift.json files of `headcount compare` (tasks, seeds)")
    plot_drift.add_argument("--out", required=True, help="figure file (.png, .svg, .pdf)")
    plot_drift.set_defaults(run=_plot_drift)

    plot_correlation = plot_kinds.add_parser(
        "correlation", help="JS divergence vs head importance, with fitted lines (Figure 6)",
        description="Scatter of each head's JS divergence against its importance, one colour "
                    "per scores file, with the least-squares line and r, rho in the legend. "
                    "Takes the corr.json files written by `headcount correlate`.",
    )
    plot_correlation.add_argument("correlations", nargs="+", metavar="CORR",
                                  help="corr.json files of `headcount correlate`")
    plot_correlation.add_argument("--out", required=True, help="figure file (.png, .svg, .pdf)")
    plot_correlation.set_defaults(run=_plot_correlation)
