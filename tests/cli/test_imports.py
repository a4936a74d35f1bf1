"""`headcount --help` and every command's --help stay light: no torch, transformers,
matplotlib, accelerate or datasets (they take seconds to import), and neither does
`import headcount`. Each check runs in a fresh interpreter, where nothing is loaded yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("torch", "transformers", "matplotlib", "accelerate", "datasets")
SRC = Path(__file__).resolve().parents[2] / "src"


def fresh_python(code: str) -> dict:
    """Run `code` in a new interpreter (this checkout's src first on the path); the JSON it
    prints last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_headcount_loads_no_heavy_module():
    loaded = fresh_python(f"""
        import json, sys
        import headcount
        print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
    """)
    assert loaded == []


def test_every_help_loads_no_heavy_module():
    report = fresh_python(f"""
        import argparse, contextlib, io, json, sys
        from headcount.cli import build_parser, main

        def commands(parser, prefix=()):
            yield prefix
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield from commands(sub, (*prefix, name))

        helps = {{}}
        for path in commands(build_parser()):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main([*path, "--help"])
                    code = None
                except SystemExit as exit_:
                    code = exit_.code
            helps[" ".join(path)] = [code, out.getvalue().startswith("usage: headcount")]
        loaded = [name for name in {HEAVY!r} if name in sys.modules]
        print(json.dumps({{"helps": helps, "loaded": loaded}}))
    """)
    helps = report["helps"]
    # Discovered from the parser: the top level, every command, and plot's figures.
    assert {"", "importance", "curve", "plot", "plot curve", "plot correlation", "study",
            "demo", "fit-mlm-head", "sparsity-curve"} <= set(helps)
    assert len(helps) >= 19
    assert all(result == [0, True] for result in helps.values()), helps
    assert report["loaded"] == []
