"""`headcount` command line: parse, call one library job, write/print its record.

User mistakes (HeadcountError) are one line on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from headcount.choices import ESTIMATORS, NORMALIZATIONS, ORDERS, PROBLEMS
from headcount.distributed import init_from_launcher, is_main_process
from headcount.errors import HeadcountError

EXIT_USER_ERROR = 2


def _progress(args) -> bool:
    """Progress bars unless --quiet, and only from the first of several processes."""
    return not args.quiet and is_main_process()


def _add_data_options(parser: argparse.ArgumentParser, *, default_split: str) -> None:
    parser.add_argument("model", help="local checkpoint directory or hub name")
    add_data_flags(parser, default_split=default_split)


def add_data_flags(parser: argparse.ArgumentParser, *, default_split: str) -> None:
    """The options that choose and encode a task's examples (shared by every command)."""
    parser.add_argument(
        "--task", required=True,
        help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, mnli-mm, qnli, rte, wnli), "
             "file:PATH (.tsv/.csv/.jsonl), dir:PATH (a folder per class) or mlm:PATH "
             "(text file or directory)",
    )
    parser.add_argument("--data-dir", help="GLUE directory in GLUE's own layout "
                        "(default: download from the Hugging Face hub)")
    parser.add_argument("--split", default=default_split,
                        help=f"train or dev (default {default_split}); mnli also "
                             "dev_matched/dev_mismatched; dir: also all (its train/dev split "
                             "is a fixed 80/20 hash of the file names); ignored for file: "
                             "and mlm:")
    parser.add_argument("--max-examples", type=int, help="use at most N examples (random)")
    parser.add_argument("--fraction", type=float, help="use a random fraction P of the examples")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subset and of masked-LM masking")
    parser.add_argument("--text-column", help="file: tasks: column of the text")
    parser.add_argument("--text-pair-column", help="file: tasks: column of the second text")
    parser.add_argument("--label-column", help="file: tasks: column of the label")
    parser.add_argument("--labels", type=_label_list,
                        help="file:/dir: tasks, a checkpoint without a trained head: its "
                             "classes in this order, e.g. neg,neutral,pos (default: the "
                             "training labels, numbers in numeric order, strings sorted)")
    parser.add_argument("--problem", choices=PROBLEMS,
                        help="file:/dir: tasks, a checkpoint without a trained head: "
                             "classification or regression (default: regression when the "
                             "labels are numbers that are not all whole)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _label_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give two or more class names separated by commas, e.g. neg,neutral,pos")
    return names


def data_options(args):
    from headcount.jobs.prepared import DataOptions

    return DataOptions(
        task=args.task, data_dir=args.data_dir, split=args.split,
        max_examples=args.max_examples, fraction=args.fraction, batch_size=args.batch_size,
        max_length=args.max_length, seed=args.seed, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
        labels=args.labels, problem=args.problem,
    )


def _importance(args) -> None:
    from headcount.io import check_output_path, write_json
    from headcount.jobs.measure import importance_job

    check_output_path(args.out)
    record = importance_job(
        args.model, data_options(args), normalize_method=args.normalize, device=args.device,
        progress=_progress(args), estimator=args.estimator, heads_per_pass=args.heads_per_pass,
    )
    if not is_main_process():
        return
    write_json(args.out, record)
    if not args.quiet:
        print(_score_table(record), file=sys.stderr)
    print(f"wrote importance of {record['layers']}x{record['heads']} heads over "
          f"{record['num_examples']} examples to {args.out}")


def _score_table(record: dict) -> str:
    rows = [f"{record['normalize']}-normalised importance (rows: layers, columns: heads)"]
    for index, row in enumerate(record["scores"]):
        label = "shared" if record["shared_across_layers"] else f"L{index:<3d}"
        rows.append(f"{label:>6} " + " ".join(f"{value:6.3f}" for value in row))
    return "\n".join(rows)


def _evaluate(args) -> None:
    from headcount.io import check_output_path, write_json
    from headcount.jobs.measure import evaluate_job

    if args.out:
        check_output_path(args.out)
    record = evaluate_job(args.model, data_options(args), device=args.device,
                          progress=_progress(args))
    if not is_main_process():
        return
    if args.out:
        write_json(args.out, record)
    metrics = ", ".join(f"{name}={value:.4f}" for name, value in record["metrics"].items())
    print(f"{record['task']} {record['split']} ({record['num_examples']} examples): {metrics}")


def _demo(args) -> None:
    from headcount.report.run import run_demo

    paths = run_demo(args.out, seeds=tuple(args.seeds), device=args.device,
                     train_examples=args.train_examples, fit_steps=args.fit_steps,
                     force=args.force, progress=not args.quiet)
    print(f"demo finished: open {paths['html']} (Markdown: {paths['markdown']})")


def _curve(args) -> None:
    from dataclasses import replace

    from headcount.io import check_output_path
    from headcount.jobs.prune import CurveRequest, curve_job
    from headcount.pruning import step_ratios
    from headcount.records import write_curve_csv

    check_output_path(args.out)
    options = data_options(args)
    rank_options = replace(
        options, split=args.rank_split, fraction=args.rank_fraction,
        max_examples=args.rank_max_examples,
    )
    ratios = args.ratios if args.ratios is not None else (
        step_ratios(args.step) if args.step is not None else None)
    # Random orders differ much from draw to draw; the layer orders only in their seeded
    # start/parity and head order within a layer, importance not at all.
    draws = args.draws if args.draws is not None else (5 if args.order == "random" else 1)
    request = CurveRequest(
        rank_task=args.rank_task, rank_options=rank_options, scores_path=args.scores,
        normalize_method=args.normalize, schedule=args.schedule, ratios=ratios,
        keep_one_per_layer=args.keep_one_per_layer, physical=not args.masked,
        order=args.order, draws=draws, estimator=args.estimator,
    )
    rows = curve_job(args.model, options, request, device=args.device, progress=_progress(args))
    if not is_main_process():
        return
    write_curve_csv(args.out, rows)
    if draws > 1:
        from headcount.orders import summarize_draws

        for point in summarize_draws([row for row in rows if row["main"]]):
            print(f"{point['ratio_pruned']:.3f} pruned: {point['metric']}="
                  f"{point['value_mean']:.4f} ± {point['value_std']:.4f} (relative "
                  f"{point['relative_mean']:.3f} ± {point['relative_std']:.3f}) over "
                  f"{point['n']} {args.order} draws")
    else:
        for row in rows:
            if row["main"]:
                print(f"{row['ratio_pruned']:.3f} pruned, {row['heads_remaining']:4d} heads "
                      f"left: {row['metric']}={row['value']:.4f} "
                      f"(relative {row['relative']:.3f})")
    print(f"wrote {len(rows)} rows to {args.out}")


def _prune(args) -> None:
    from headcount.jobs.prune import PruneRequest, prune_job

    request = PruneRequest(
        scores_path=args.scores, order=args.order, seed=args.seed, ratio=args.ratio,
        heads=args.heads, normalize_method=args.normalize,
        keep_one_per_layer=args.keep_one_per_layer,
    )
    record = prune_job(args.model, args.out, request, device=args.device)
    by = f" in {args.order} order (seed {args.seed})" if args.order else ""
    print(f"removed {record['heads_removed']} heads{by} ({record['heads_remaining']} left); "
          f"parameters {record['parameters_before']:,} -> {record['parameters_after']:,}; "
          f"wrote {record['out']}")


def _plot_curve(args) -> None:
    from headcount.plotting import save_curve_figure

    print(f"wrote {save_curve_figure(args.curves, args.out)}")


def _finetune(args) -> None:
    from headcount.jobs.train import finetune_job
    from headcount.training import TrainingConfig

    config = TrainingConfig(
        epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        warmup=args.warmup, weight_decay=args.weight_decay, max_steps=args.max_steps,
        freeze_layers=args.freeze_layers, seed=args.seed,
    )
    record = finetune_job(args.model, data_options(args), config, args.out,
                          eval_split=args.eval_split, device=args.device,
                          progress=_progress(args))
    if not is_main_process():
        return
    metrics = ", ".join(f"{name}={value:.4f}" for name, value in record["metrics"].items())
    print(f"fine-tuned {record['steps']} steps ({record['examples_per_second']:.1f} examples/s, "
          f"{record['frozen_parameters']:,} parameters frozen); {record['eval_split']}: "
          f"{metrics}; wrote {args.out}")
    pruned = record.get("weight_pruning")
    if pruned:
        print(f"encoder weights pruned by magnitude, held at 0: sparsity "
              f"{pruned['achieved']:.4f} before training, "
              f"{pruned['sparsity_after_training']:.4f} after")


def _recall(args) -> None:
    from headcount.io import check_output_path
    from headcount.recall import recall_curve
    from headcount.records import write_recall_csv

    check_output_path(args.out)
    rows = recall_curve(args.pretrain, args.downstream, threshold=args.threshold,
                        step=args.step)
    write_recall_csv(args.out, rows)
    for row in rows:
        print(f"x={row['x']:.2f}: recall {row['recall_mean']:.3f} ± {row['recall_std']:.3f} "
              f"(n={row['n']})")
    print(f"wrote {len(rows)} rows to {args.out}")


def _compensation(args) -> None:
    from headcount.io import check_output_path, write_json
    from headcount.jobs.analysis import compensation_job

    check_output_path(args.out)
    record = compensation_job(args.before, args.after, args.model)
    write_json(args.out, record)
    for layer in record["per_layer"]:
        print(f"layer {layer['layer']}: {layer['heads']:3d} heads, importance "
              f"{layer['before_sum']:.4g} -> {layer['after_sum']:.4g}, share of the total "
              f"{layer['share_before']:.3f} -> {layer['share_after']:.3f}")
    print(f"{record['heads_remaining']} heads: importance {record['total_before']:.4g} -> "
          f"{record['total_after']:.4g}; {record['heads_gaining']} gain share, the top 10% "
          f"carry {record['top10_share']:.3f} of the gain, Gini {record['gini']:.3f}; "
          f"wrote {args.out}")


def _plot_recall(args) -> None:
    from headcount.plotting import save_recall_figure

    print(f"wrote {save_recall_figure(args.recalls, args.out)}")


def _study(args) -> None:
    from headcount.report.run import study_command

    paths = study_command(args.config, args.out, force=args.force, progress=not args.quiet)
    print(f"report: {paths['html']} (and {paths['markdown']})")


def _add_study_parser(commands) -> None:
    study = commands.add_parser(
        "study", help="run the whole study of a TOML config (resumable), with a report",
        description="Fine-tuning, importance, pruning curves, recall, drift, correlation, "
                    "freezing and pruned fine-tuning for every model, task and seed of the "
                    "config; tables, figures and report.html in the run directory. Running "
                    "it again resumes where it stopped.",
    )
    study.add_argument("config", help="study configuration (TOML), e.g. examples/glue-local.toml")
    study.add_argument("--out", help="run directory (default runs/<study name>)")
    study.add_argument("--force", action="store_true",
                       help="start afresh in a run directory made by another configuration "
                            "(only ever deletes a headcount run directory)")
    study.add_argument("--quiet", action="store_true", help="no progress output")
    study.set_defaults(run=_study)


def _add_finetune_parser(commands) -> None:
    finetune = commands.add_parser(
        "finetune", help="fine-tune for sequence classification/regression (accelerate)",
        description="Fine-tune on a task's training split, evaluate on its dev split, save "
                    "the checkpoint and metrics.json. Runs under accelerate launch / torchrun.",
    )
    _add_data_options(finetune, default_split="train")
    finetune.add_argument("--epochs", type=float, default=3.0)
    finetune.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    finetune.add_argument("--warmup", type=float, default=0.06,
                          help="share of the steps with a rising learning rate")
    finetune.add_argument("--weight-decay", type=float, default=0.01)
    finetune.add_argument("--max-steps", type=int, help="stop after N optimisation steps")
    finetune.add_argument("--freeze-layers", type=int, default=0,
                          help="freeze the embeddings and the lowest K layers")
    finetune.add_argument("--eval-split", default="dev", help="split to evaluate on")
    finetune.add_argument("--out", required=True, help="directory for the checkpoint")
    finetune.set_defaults(run=_finetune)


ORDER_HELP = (
    "pruning order: importance (default; least important first), random (a random "
    "permutation of all heads), or whole layers in turn, heads within a layer in random "
    "order: top (highest layer first), bottom (lowest first), middle (middle layers first), "
    "avoid-middle (outermost first), consecutive (a growing block of adjacent layers from a "
    "random start), non-adjacent (every other layer first); ALBERT: importance and random "
    "only; the orders other than importance take no --rank-task, --scores or --normalize"
)


def _add_curve_parser(commands) -> None:
    curve = commands.add_parser(
        "curve", help="prune heads least-important-first (or in a random or layer order) "
                      "and evaluate at each ratio",
        description="Pruning curve: heads removed from least to most important (or in a "
                    "random or layer-location --order); the metric and the relative "
                    "performance at each ratio, as CSV rows.",
    )
    _add_data_options(curve, default_split="dev")
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
    steps = curve.add_mutually_exclusive_group()
    steps.add_argument("--step", type=float, help="share of all heads per step (default 0.1)")
    steps.add_argument("--ratios", type=float, nargs="+", help="explicit ratios to evaluate")
    curve.add_argument("--keep-one-per-layer", action="store_true",
                       help="never remove the last head of a layer")
    curve.add_argument("--masked", action="store_true",
                       help="gate heads off on the full-size model instead of removing them")
    curve.add_argument("--out", required=True, help="curve.csv to write")
    curve.set_defaults(run=_curve)

    prune = commands.add_parser("prune", help="write a physically pruned checkpoint")
    prune.add_argument("model", help="local checkpoint directory or hub name")
    by = prune.add_mutually_exclusive_group(required=True)
    by.add_argument("--scores", help="scores.json to order heads by (least important first)")
    by.add_argument("--order", help="instead of --scores: "
                    + ", ".join(name for name in ORDERS if name != "importance")
                    + " (see `headcount curve --help`)")
    prune.add_argument("--seed", type=int, default=0,
                       help="seed of --order (random heads, start/parity, order within layers)")
    amount = prune.add_mutually_exclusive_group(required=True)
    amount.add_argument("--ratio", type=float, help="share of all heads to remove")
    amount.add_argument("--heads", type=int, help="number of heads to remove")
    prune.add_argument("--normalize", help="re-normalise the raw scores (default: as stored)")
    prune.add_argument("--keep-one-per-layer", action="store_true")
    prune.add_argument("--device", default="cpu")
    prune.add_argument("--out", required=True, help="directory of the pruned checkpoint")
    prune.set_defaults(run=_prune)

    plot = commands.add_parser("plot", help="figures")
    kinds = plot.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    plot_curve = kinds.add_parser("curve", help="relative performance vs ratio pruned")
    plot_curve.add_argument("curves", nargs="+", help="curve CSV files")
    plot_curve.add_argument("--out", required=True, help="figure file (.png, .svg, .pdf)")
    plot_curve.set_defaults(run=_plot_curve)

    plot_recall = kinds.add_parser("recall", help="recall of important heads vs x (Figure 3)")
    plot_recall.add_argument("recalls", nargs="+", help="recall CSV files (one line each)")
    plot_recall.add_argument("--out", required=True, help="figure file (.png, .svg, .pdf)")
    plot_recall.set_defaults(run=_plot_recall)

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

    from headcount.cli.analysis import add_drift_commands

    add_drift_commands(commands, kinds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headcount",
        description="Measure, prune and study the importance of attention heads.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    importance = commands.add_parser(
        "importance", help="head importance of a model on a task (gradient, ablation, ...)",
        description="Exact per-example head importance I[l,h] = mean |dL/dxi[l,h]| "
                    "(or another --estimator; higher = more important).",
    )
    _add_data_options(importance, default_split="train")
    importance.add_argument("--normalize", default="l1",
                            help=f"per-layer normalisation: {', '.join(NORMALIZATIONS)}")
    importance.add_argument(
        "--estimator", default="gradient",
        help=f"{', '.join(ESTIMATORS)} (default gradient): mean |dL/dxi|; loss increase "
             "when the head alone is removed; ln(keys) - attention entropy; mean max "
             "attention weight; Frobenius norm of the head's weights (no data)")
    importance.add_argument("--heads-per-pass", type=int,
                            help="ablation: heads evaluated per forward pass (default: as "
                                 "many as a memory budget allows)")
    importance.add_argument("--out", required=True, help="scores.json to write")
    importance.set_defaults(run=_importance)

    evaluate = commands.add_parser("evaluate", help="the task's metric(s) of a model")
    _add_data_options(evaluate, default_split="dev")
    evaluate.add_argument("--out", help="also write the metrics as JSON")
    evaluate.set_defaults(run=_evaluate)

    _add_curve_parser(commands)
    _add_finetune_parser(commands)
    _add_study_parser(commands)

    from headcount.cli.mlm import add_mlm_head_command

    add_mlm_head_command(commands)

    from headcount.cli.weights import add_weight_pruning_commands

    add_weight_pruning_commands(commands)


    demo = commands.add_parser(
        "demo", help="offline demo study: MiniLM on BBC News, on CPU, with a report",
    )
    add_arguments(demo)
    demo.set_defaults(run=_demo)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f"headcount: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        # Under torchrun / accelerate launch: join the process group.
        init_from_launcher(getattr(args, "device", None))
        args.run(args)
    except HeadcountError as error:
        print(f"headcount: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("headcount: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-examples", type=int, default=600,
                        help="BBC News articles to fine-tune on (default 600)")
    parser.add_argument("--fit-steps", type=int, default=300,
                        help="steps to fit MiniLM's masked-LM head (default 300)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--force", action="store_true",
                        help="start afresh if --out holds a run of other settings")
    parser.add_argument("--quiet", action="store_true")
