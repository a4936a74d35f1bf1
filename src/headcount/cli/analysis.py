"""`headcount recall`, `compensation`, `compare` and `correlate`: analyses of curves, scores
and checkpoints (jobs in `headcount.jobs.analysis`)."""

from __future__ import annotations

from headcount.cli._shared import (
    add_data_flags,
    check_output,
    data_options,
    print_rows_written,
    write_record,
)


def add_analysis_commands(commands) -> None:
    """Register `recall`, `compensation`, `compare` and `correlate` on `commands` (the
    `headcount` subparsers)."""
    recall = commands.add_parser(
        "recall", help="recall of downstream-important heads kept by pre-train pruning",
        description="Recall_t(x) = |H_x^(p) & H_t^(d)| / |H_t^(d)| (Eq. 5 of Chiang & Chen) "
                    "from pruning curves; mean and std over seeds.",
    )
    recall.add_argument("--pretrain", nargs="+", required=True,
                        help="masked-LM curve CSV(s), heads pruned in pre-train importance order")
    recall.add_argument("--downstream", nargs="+", required=True,
                        help="downstream curve CSV(s), pruned in downstream importance order")
    recall.add_argument("--threshold", type=float, default=0.9,
                        help="relative downstream performance t defining H_t^(d) (default 0.9)")
    recall.add_argument("--step", type=float, default=0.05, help="grid step of x")
    recall.add_argument("--out", required=True, help="recall.csv to write")
    recall.set_defaults(run=_recall)

    compensation = commands.add_parser(
        "compensation", help="how the importance of the heads left changed after fine-tuning "
                             "a pruned model",
        description="Per head and layer: importance after minus before fine-tuning the pruned "
                    "checkpoint (two scores.json of it), the share of the total increase "
                    "carried by the top 10%% of heads and the Gini coefficient of the "
                    "increases (Budhraja et al.'s compensation).",
    )
    compensation.add_argument("model", help="the pruned checkpoint (its heads are read from "
                              "its config)")
    compensation.add_argument("--before", required=True, help="scores.json before fine-tuning")
    compensation.add_argument("--after", required=True, help="scores.json after fine-tuning")
    compensation.add_argument("--out", required=True, help="compensation.json to write")
    compensation.set_defaults(run=_compensation)
    _add_drift_commands(commands)


def _add_drift_commands(commands) -> None:
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


def _recall(args) -> None:
    from headcount.jobs.analysis import recall_job
    from headcount.records import write_recall_csv

    check_output(args.out)
    rows = recall_job(args.pretrain, args.downstream, threshold=args.threshold, step=args.step)
    write_recall_csv(args.out, rows)
    for row in rows:
        print(f"x={row['x']:.2f}: recall {row['recall_mean']:.3f} ± {row['recall_std']:.3f} "
              f"(n={row['n']})")
    print_rows_written(rows, args.out)


def _compensation(args) -> None:
    from headcount.jobs.analysis import compensation_job

    check_output(args.out)
    record = compensation_job(args.before, args.after, args.model)
    write_record(args, record)
    for layer in record["per_layer"]:
        print(f"layer {layer['layer']}: {layer['heads']:3d} heads, importance "
              f"{layer['before_sum']:.4g} -> {layer['after_sum']:.4g}, share of the total "
              f"{layer['share_before']:.3f} -> {layer['share_after']:.3f}")
    print(f"{record['heads_remaining']} heads: importance {record['total_before']:.4g} -> "
          f"{record['total_after']:.4g}; {record['heads_gaining']} gain share, the top 10% "
          f"carry {record['top10_share']:.3f} of the gain, Gini {record['gini']:.3f}; "
          f"wrote {args.out}")


def _compare(args) -> None:
    from headcount.jobs.analysis import drift_job

    check_output(args.out)
    record = drift_job(args.pretrained, args.finetuned, data_options(args),
                       device=args.device, progress=not args.quiet)
    write_record(args, record, _drift_table)
    print(f"wrote JS divergence of {record['layers']}x{record['heads']} heads and L2 distance "
          f"of {record['layers']} layers over {record['num_examples']} examples to {args.out}")


def _drift_table(record: dict) -> str:
    rows = ["layer  JS mean  JS max   L2", f"{'emb':>5} {'':>8} {'':>7} "
            f"{record['l2_embeddings']:8.4f}"]
    for index, (mean, peak, l2) in enumerate(zip(record["js_layer_mean"],
                                                 record["js_layer_max"], record["l2"],
                                                 strict=True)):
        js = ("    none    none" if mean is None else f"{mean:8.4f} {peak:7.4f}")
        rows.append(f"{index + 1:>5} {js} {l2:8.4f}")
    return "\n".join(rows)


def _correlate(args) -> None:
    from headcount.jobs.analysis import correlate_job

    check_output(args.out)
    record = correlate_job(args.scores, args.drift, raw=args.raw)
    write_record(args, record)
    for entry in record["records"]:
        print(f"importance on {entry['scores_task']} vs JS on {entry['drift_task']} "
              f"(n={entry['n']}): r={_number(entry['pearson_r'])} "
              f"(p={_number(entry['pearson_p'], 2)}), rho={_number(entry['spearman_rho'])} "
              f"(p={_number(entry['spearman_p'], 2)}), js = {_number(entry['slope'], 4)} * "
              f"importance + {_number(entry['intercept'], 4)}")
    print(f"wrote {len(record['records'])} correlation record(s) to {args.out}")


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
