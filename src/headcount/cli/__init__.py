"""The `headcount` command line: one module per command group (`measure`, `prune`, `plot`,
`analysis`, `train`, `study`, `mlm`, `weights`), each a parser and one call into
`headcount.jobs` (or the study's report); `app` registers them and runs one.

    >>> from headcount.cli import main
    >>> main(["evaluate", "ckpt/", "--task", "sst2", "--split", "dev"])
    0
"""

from headcount.cli.app import EXIT_USER_ERROR, build_parser, main, one_line_warning

__all__ = ["EXIT_USER_ERROR", "build_parser", "main", "one_line_warning"]
