"""The `headcount` parser, built from the command groups' registrations, and `main`.

Each command module registers its parsers and a `run` handler; `main` parses, joins a
torchrun / accelerate launch, and runs the handler. User mistakes (HeadcountError) are one
line on stderr and exit status 2, no traceback. torch loads only once a command runs (in
`main` and the handlers), so `headcount --help` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings

from headcount.cli.analysis import add_analysis_commands
from headcount.cli.checkpoint import add_checkpoint_commands
from headcount.cli.compress import add_compress_command
from headcount.cli.measure import add_measure_commands
from headcount.cli.mlm import add_mlm_head_command
from headcount.cli.plot import add_plot_command
from headcount.cli.prune import add_prune_commands
from headcount.cli.study import add_demo_command, add_study_command
from headcount.cli.train import add_finetune_command
from headcount.cli.weights import add_weights_commands
from headcount.errors import HeadcountError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# In the order of `headcount --help`.
COMMAND_GROUPS = (
    add_measure_commands,   # importance, evaluate
    add_prune_commands,     # curve, prune
    add_plot_command,       # plot curve|recall|drift|correlation
    add_analysis_commands,  # recall, compensation, compare, correlate
    add_finetune_command,   # finetune
    add_study_command,      # study
    add_mlm_head_command,   # fit-mlm-head
    add_weights_commands,   # weights-prune, sparsity-curve
    add_compress_command,   # compress
    add_checkpoint_commands,  # export, migrate
    add_demo_command,       # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headcount",
        description="Measure, prune and study the importance of attention heads.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in COMMAND_GROUPS:
        add_group(commands)
    return parser


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """`warnings.formatwarning` while a command runs: one line, no source location."""
    return f"headcount: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run `headcount` with `argv` (default: sys.argv[1:]); the exit status: 0, 2 for a
    user error, 130 / 143 when stopped by Ctrl-C / SIGTERM (`headcount.stopping`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        from headcount.distributed import init_from_launcher
        from headcount.stopping import stop_on_signals

        with stop_on_signals():
            # Under torchrun / accelerate launch: join the process group.
            init_from_launcher(getattr(args, "device", None))
            args.run(args)
    except HeadcountError as error:
        print(f"headcount: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as error:
        return _stopped(error, args, argv)
    finally:
        warnings.formatwarning = previous_format
    return 0


def _stopped(error: KeyboardInterrupt, args, argv: list[str]) -> int:
    """Say that the command stopped (and how to resume one that can), its exit status."""
    status = getattr(error, "exit_status", EXIT_INTERRUPTED)
    print("headcount: interrupted" if status == EXIT_INTERRUPTED
          else f"headcount: stopped by {error}", file=sys.stderr)
    if getattr(args, "resumable", False):
        print("headcount: every finished unit is saved; resume with: "
              f"{shlex.join(['headcount', *argv])}", file=sys.stderr)
    return status
