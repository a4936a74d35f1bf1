"""`headcount importance` and `headcount evaluate`: a checkpoint's head importance or metrics
on a task (jobs in `headcount.jobs.measure`)."""

from __future__ import annotations

from headcount.choices import ESTIMATORS, NORMALIZATIONS, UNITS
from headcount.cli._shared import (
    add_model_and_data_flags,
    check_output,
    data_options,
    is_main_process,
    metrics_text,
    show_progress,
    write_record,
)


def add_measure_commands(commands) -> None:
    """Register `importance` and `evaluate` on `commands` (the `headcount` subparsers)."""
    importance = commands.add_parser(
        "importance", help="head importance of a model on a task (gradient, ablation, ...)",
        description="Exact per-example head importance I[l,h] = mean |dL/dxi[l,h]| "
                    "(or another --estimator; higher = more important).",
    )
    add_model_and_data_flags(importance, default_split="train")
    importance.add_argument("--normalize", default="l1",
                            help=f"per-layer normalisation: {', '.join(NORMALIZATIONS)}")
    importance.add_argument(
        "--estimator", default="gradient",
        help=f"{', '.join(ESTIMATORS)} (default gradient): mean |dL/dxi|; loss increase "
             "when the head alone is removed; ln(keys) - attention entropy; mean max "
             "attention weight; Frobenius norm of the head's weights (no data)")
    importance.add_argument("--units", default="heads",
                            help=f"{', '.join(UNITS)} (default heads): score attention heads, "
                                 "feed-forward neurons, or both from the same backward pass")
    importance.add_argument("--heads-per-pass", type=int,
                            help="ablation: heads evaluated per forward pass (default: as "
                                 "many as a memory budget allows)")
    importance.add_argument("--out", required=True, help="scores.json to write")
    importance.set_defaults(run=_importance)

    evaluate = commands.add_parser("evaluate", help="the task's metric(s) of a model")
    add_model_and_data_flags(evaluate, default_split="dev")
    evaluate.add_argument("--out", help="also write the metrics as JSON")
    evaluate.set_defaults(run=_evaluate)


def _importance(args) -> None:
    from headcount.jobs.measure import importance_job

    check_output(args.out)
    record = importance_job(
        args.model, data_options(args), normalize_method=args.normalize, device=args.device,
        progress=show_progress(args), estimator=args.estimator,
        heads_per_pass=args.heads_per_pass, units=args.units,
    )
    if not is_main_process():
        return
    write_record(args, record, _score_table)
    grids = " and ".join(f"{record['layers']}x{record[unit]} {unit}"
                         for unit in ("heads", "neurons") if unit in record)
    print(f"wrote importance of {grids} over {record['num_examples']} examples to {args.out}")


def _score_table(record: dict) -> str:
    """The normalised head scores of a `scores.json` record, one row per layer; for neurons
    (too many to print) the spread of each layer's normalised scores."""
    rows = []
    labels = ["shared" if record["shared_across_layers"] else f"L{index:<3d}"
              for index in range(record["layers"])]
    if "scores" in record:
        rows.append(f"{record['normalize']}-normalised importance (rows: layers, columns: "
                    "heads)")
        rows += [f"{label:>6} " + " ".join(f"{value:6.3f}" for value in row)
                 for label, row in zip(labels, record["scores"], strict=True)]
    if "neuron_scores" in record:
        rows.append(f"{record['normalize']}-normalised neuron importance per layer: min, "
                    "median, max")
        for label, row in zip(labels, record["neuron_scores"], strict=True):
            ordered = sorted(row)
            rows.append(f"{label:>6} {ordered[0]:.2e} {ordered[len(ordered) // 2]:.2e} "
                        f"{ordered[-1]:.2e}")
    return "\n".join(rows)


def _evaluate(args) -> None:
    from headcount.jobs.measure import evaluate_job

    check_output(args.out)
    record = evaluate_job(args.model, data_options(args), device=args.device,
                          progress=show_progress(args))
    if not is_main_process():
        return
    if args.out:
        write_record(args, record)
    print(f"{record['task']} {record['split']} ({record['num_examples']} examples): "
          f"{metrics_text(record['metrics'])}")
