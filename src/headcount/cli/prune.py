"""`headcount curve` and `headcount prune`: a pruning curve, or a physically pruned checkpoint
(jobs in `headcount.jobs.prune`)."""

from __future__ import annotations

from headcount.choices import ESTIMATORS, NORMALIZATIONS, ORDERS, UNITS
from headcount.cli._shared import (
    add_model_and_data_flags,
    add_model_argument,
    check_output,
    data_options,
    is_main_process,
    print_rows_written,
    show_progress,
)

UNITS_HELP = (f"{', '.join(UNITS)} (default heads): prune attention heads, feed-forward "
              "neurons, or both, each to the given ratio of its own units")
ORDER_HELP = (
    "pruning order: importance (default; least important first), random (a random "
    "permutation of all heads), or whole layers in turn, heads within a layer in random "
    "order: top (highest layer first), bottom (lowest first), middle (middle layers first), "
    "avoid-middle (outermost first), consecutive (a growing block of adjacent layers from a "
    "random start), non-adjacent (every other layer first); ALBERT: importance and random "
    "only; the orders other than importance take no --rank-task, --scores or --normalize"
)


def add_prune_commands(commands) -> None:
    """Register `curve` and `prune` on `commands` (the `headcount` subparsers)."""
    _add_curve_command(commands)
    _add_prune_command(commands)


def _add_curve_command(commands) -> None:
    curve = commands.add_parser(
        "curve", help="prune heads least-important-first (or in a random or layer order) "
                      "and evaluate at each ratio",
        description="Pruning curve: heads removed from least to most important (or in a "
                    "random or layer-location --order); the metric and the relative "
                    "performance at each ratio, as CSV rows.",
    )
    add_model_and_data_flags(curve, default_split="dev")
    ranking = curve.add_mutually_exclusive_group()
    ranking.add_argument("--rank-task", help="task whose importance orders the heads "
                         "(default: --task)")
    ranking.add_argument("--scores", help="scores.json of `headcount importance` to order by")
    curve.add_argument("--order", default="importance", help=ORDER_HELP)
    curve.add_argument("--draws", type=int,
                       help="curves of --order drawn with seeds --seed, --seed+1, ...; "
                            "evaluated on the same examples (default 5 for random, else 1)")
    curve.add_argument("--estimator", default="gradient",
                       help="importance estimator for --rank-task ranking: "
                            f"{', '.join(ESTIMATORS)} (default gradient)")
    curve.add_argument("--rank-split", default="train", help="split for ranking (default train)")
    curve.add_argument("--rank-fraction", type=float, help="random fraction of it for ranking")
    curve.add_argument("--rank-max-examples", type=int, help="at most N examples for ranking")
    curve.add_argument("--normalize", help=f"one of {', '.join(NORMALIZATIONS)} (default l1, "
                       "or the scores file's)")
    curve.add_argument("--schedule", default="one-shot", help="one-shot or iterative")
    curve.add_argument("--units", default="heads", help=UNITS_HELP)
    steps = curve.add_mutually_exclusive_group()
    steps.add_argument("--step", type=float, help="share of all heads per step (default 0.1)")
    steps.add_argument("--ratios", type=float, nargs="+", help="explicit ratios to evaluate")
    curve.add_argument("--keep-one-per-layer", action="store_true",
                       help="never remove the last head of a layer")
    curve.add_argument("--masked", action="store_true",
                       help="gate heads off on the full-size model instead of removing them")
    curve.add_argument("--out", required=True, help="curve.csv to write")
    curve.set_defaults(run=_curve)


def _add_prune_command(commands) -> None:
    prune = commands.add_parser("prune", help="write a physically pruned checkpoint")
    add_model_argument(prune)
    by = prune.add_mutually_exclusive_group(required=True)
    by.add_argument("--scores", help="scores.json to order heads by (least important first)")
    by.add_argument("--order", help="instead of --scores: "
                    + ", ".join(name for name in ORDERS if name != "importance")
                    + " (see `headcount curve --help`)")
    prune.add_argument("--seed", type=int, default=0,
                       help="seed of --order (random heads, start/parity, order within layers)")
    amount = prune.add_mutually_exclusive_group(required=True)
    amount.add_argument("--ratio", type=float,
                        help="share of all heads (and/or neurons, see --units) to remove")
    amount.add_argument("--heads", type=int, help="number of heads to remove")
    prune.add_argument("--units", default="heads", help=UNITS_HELP)
    prune.add_argument("--normalize", help="re-normalise the raw scores (default: as stored)")
    prune.add_argument("--keep-one-per-layer", action="store_true")
    prune.add_argument("--device", default="cpu")
    prune.add_argument("--out", required=True, help="directory of the pruned checkpoint")
    prune.set_defaults(run=_prune)


def _curve(args) -> None:
    from headcount.jobs.prune import CurveRequest, curve_job
    from headcount.pruning import step_ratios
    from headcount.records import write_curve_csv

    check_output(args.out)
    # --step and --ratios exclude each other; neither: the job's default steps.
    ratios = args.ratios if args.step is None else step_ratios(args.step)
    request = CurveRequest(
        rank_task=args.rank_task,
        rank_options=data_options(args, split=args.rank_split, fraction=args.rank_fraction,
                                  max_examples=args.rank_max_examples),
        scores_path=args.scores, normalize_method=args.normalize, schedule=args.schedule,
        ratios=ratios, keep_one_per_layer=args.keep_one_per_layer, physical=not args.masked,
        order=args.order, draws=args.draws, estimator=args.estimator, units=args.units,
    )
    rows = curve_job(args.model, data_options(args), request, device=args.device,
                     progress=show_progress(args))
    if not is_main_process():
        return
    write_curve_csv(args.out, rows)
    _print_curve(rows, args.order)
    print_rows_written(rows, args.out)


def _print_curve(rows: list[dict], order: str) -> None:
    """One line per ratio: the point itself, or its mean ± std over several draws."""
    main = [row for row in rows if row["main"]]
    if not any(row["draw"] for row in main):
        for row in main:
            left = [f"{row['heads_remaining']:4d} heads"] if row["units"] != "neurons" else []
            if row["neurons_remaining"] is not None:
                left.append(f"{row['neurons_remaining']:6d} neurons")
            print(f"{row['ratio_pruned']:.3f} pruned, {' and '.join(left)} left: "
                  f"{row['metric']}={row['value']:.4f} (relative {row['relative']:.3f})")
        return
    from headcount.orders import summarize_draws

    for point in summarize_draws(main):
        print(f"{point['ratio_pruned']:.3f} pruned: {point['metric']}="
              f"{point['value_mean']:.4f} ± {point['value_std']:.4f} (relative "
              f"{point['relative_mean']:.3f} ± {point['relative_std']:.3f}) over "
              f"{point['n']} {order} draws")


def _prune(args) -> None:
    from headcount.jobs.prune import PruneRequest, prune_job

    request = PruneRequest(
        scores_path=args.scores, order=args.order, seed=args.seed, ratio=args.ratio,
        heads=args.heads, normalize_method=args.normalize,
        keep_one_per_layer=args.keep_one_per_layer, units=args.units,
    )
    record = prune_job(args.model, args.out, request, device=args.device)
    by = f" in {args.order} order (seed {args.seed})" if args.order else ""
    removed = [f"{record[f'{kind}_removed']} {kind}{by} ({record[f'{kind}_remaining']} left)"
               for kind in ("heads", "neurons")
               if record["units"] in (kind, "both")]
    print(f"removed {' and '.join(removed)}; parameters {record['parameters_before']:,} -> "
          f"{record['parameters_after']:,}; wrote {record['out']}")
