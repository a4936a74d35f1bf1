"""The names users choose from (normalisations, estimators, orders, schedules, scopes), the
defaults the command line shows (sparsities, masked-LM head fitting), and the one check that
turns a wrong name into "Unknown estimator 'x'. Did you mean: y? Allowed: a, b, c."

This module imports nothing heavy: the command line builds its help from these names
without loading torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from headcount.errors import ConfigError, HeadcountError

NORMALIZATIONS = ("l1", "l2", "none")
ESTIMATORS = ("gradient", "ablation", "entropy", "confidence", "magnitude")
ATTENTION_ESTIMATORS = ("entropy", "confidence")
LAYER_ORDERS = ("top", "bottom", "middle", "avoid-middle", "consecutive", "non-adjacent")
ORDERS = ("importance", "random", *LAYER_ORDERS)
SCHEDULES = ("one-shot", "iterative")
SCOPES = ("global", "layer")  # of weight-magnitude pruning
PROBLEMS = ("classification", "regression")  # what a new task head predicts
UNITS = ("heads", "neurons", "both")  # what importance, curves and pruning act on
BUDGET_KINDS = ("flops", "params", "latency")  # what `headcount compress` budgets
FISHER_KINDS = ("per-example", "batch")  # the exact mask Fisher, or Kwon et al.'s
DEFAULT_SPARSITIES = tuple(round(0.1 * step, 1) for step in range(10))  # 0, 0.1, ..., 0.9
# Defaults of fitting a masked-LM head (`headcount fit-mlm-head`), here so that its --help
# can show them. Sized for a CPU (all-MiniLM-L6-v2 on BBC News: about 1-2 minutes on 2
# cores). The vocabulary projection at the masked positions dominates a step, and every block
# costs one frozen-encoder pass when first visited, so the text is capped at a few hundred
# blocks, visited ~5 times. More gains little there: 1,500 steps on 1,600 blocks reached
# held-out recall@1 0.127, against about 0.12 with these defaults.
MLM_HEAD_STEPS, MLM_HEAD_BATCH_SIZE, MLM_HEAD_LEARNING_RATE, MLM_HEAD_MAX_BLOCKS = (
    300, 8, 3e-3, 512)


def suggest(name: str, allowed: Iterable[str]) -> str:
    """' Did you mean: x?' for the closest allowed name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    return f" Did you mean: {close[0]}?" if close else ""


def unknown(kind: str, name, allowed: Iterable[str], extra: str = "") -> str:
    """The message for a name that is not among `allowed` (`extra` lists other accepted
    forms, e.g. "file:PATH")."""
    allowed = list(allowed)
    listed = ", ".join(allowed) + (f", {extra}" if extra else "")
    return f"Unknown {kind} '{name}'.{suggest(name, allowed)} Allowed: {listed}"


def check_choice(kind: str, name, allowed: Iterable[str], *,
                 error: type[HeadcountError] = ConfigError) -> str:
    """`name` if it is one of `allowed`, else `error` with the closest name and the list.

    Example:
        >>> check_choice("estimator", "gradient", ESTIMATORS)
        'gradient'
    """
    allowed = tuple(allowed)
    if name not in allowed:
        raise error(unknown(kind, name, allowed))
    return name
