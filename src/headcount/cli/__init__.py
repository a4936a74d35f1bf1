"""The `headcount` command line: one module per command group, registered by `app`."""


def main(argv: list[str] | None = None) -> int:
    """Run `headcount` with `argv` (default: sys.argv[1:]); the exit status."""
    from headcount.cli.app import main as run

    return run(argv)
