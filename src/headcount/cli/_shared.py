"""What the command modules share: the model, data, device and progress flags, the
`DataOptions` of parsed flags, output checks and writes, and the lines several commands print.

Importing this module loads no torch: `headcount --help` builds every parser from it, and
torch (through `headcount.distributed` or a job) loads only once a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from headcount.choices import PROBLEMS
from headcount.io import check_output_path, write_json

MODEL_HELP = "local checkpoint directory or hub name"
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional checkpoint of a command that reads one model."""
    parser.add_argument("model", help=MODEL_HELP)


def add_device_flag(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    parser.add_argument("--device", default=default, help=DEVICE_HELP)


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def label_list(text: str) -> tuple[str, ...]:
    """`--labels a,b,c` as class names; two or more, none empty."""
    names = tuple(name.strip() for name in text.split(","))
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give two or more class names separated by commas, e.g. neg,neutral,pos")
    return names


def add_data_flags(parser: argparse.ArgumentParser, *, default_split: str) -> None:
    """The options that choose and encode a task's examples (shared by every command that
    reads a task), then --device and --quiet."""
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
    parser.add_argument("--labels", type=label_list,
                        help="file:/dir: tasks, a checkpoint without a trained head: its "
                             "classes in this order, e.g. neg,neutral,pos (default: the "
                             "training labels, numbers in numeric order, strings sorted)")
    parser.add_argument("--problem", choices=PROBLEMS,
                        help="file:/dir: tasks, a checkpoint without a trained head: "
                             "classification or regression (default: regression when the "
                             "labels are numbers that are not all whole)")
    add_device_flag(parser)
    add_quiet_flag(parser)


def add_model_and_data_flags(parser: argparse.ArgumentParser, *, default_split: str) -> None:
    add_model_argument(parser)
    add_data_flags(parser, default_split=default_split)


def data_options(args: argparse.Namespace, **changes):
    """The `jobs.prepared.DataOptions` of the data flags, with `changes` applied (e.g. the
    split and subset that `curve` ranks heads on)."""
    from headcount.jobs.prepared import DataOptions

    fields = dict(
        task=args.task, data_dir=args.data_dir, split=args.split,
        max_examples=args.max_examples, fraction=args.fraction, batch_size=args.batch_size,
        max_length=args.max_length, seed=args.seed, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
        labels=args.labels, problem=args.problem,
    )
    return DataOptions(**{**fields, **changes})


def is_main_process() -> bool:
    """Whether this is the process that writes and prints (the only one unless launched by
    torchrun / accelerate launch)."""
    from headcount.distributed import is_main_process as main_process

    return main_process()


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless --quiet, and only from the first of several processes."""
    return not args.quiet and is_main_process()


def check_output(path: str | None) -> None:
    """Refuse an --out that cannot be written before any long computation (none given: ok)."""
    if path:
        check_output_path(path)


def write_record(args: argparse.Namespace, record: dict,
                 table: Callable[[dict], str] | None = None) -> None:
    """Write the command's JSON record to --out (atomically), then `table(record)` (a
    summary for the eye) on stderr unless --quiet."""
    write_json(args.out, record)
    if table is not None and not args.quiet:
        print(table(record), file=sys.stderr)


def metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4f}" for name, value in metrics.items())


def print_rows_written(rows: list, out: str) -> None:
    print(f"wrote {len(rows)} rows to {out}")
