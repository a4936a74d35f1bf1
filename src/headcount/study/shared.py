"""What several units of a study share within one run (one process): the evaluations of
a model on the same examples with the same units pruned.

Every pruning curve of a fine-tuned model (each normalisation, each order, each
estimator's order) starts at the unpruned model and ends with every head pruned, on the
same examples: those two points are the same evaluation for all of them. `shared_evaluations`
gives the curves of one checkpoint and set of examples one store of evaluations by the set
of units pruned (`headcount.pruning.pruning_curve`'s `evaluations`), so each is computed
once. The store is keyed by the checkpoint's files (path, size, modification time), so a
checkpoint written again is evaluated again.

Example:
    >>> store = shared_evaluations("runs/demo/units/finetune/minilm/bbc-news/seed-0", options)
    >>> store is shared_evaluations("runs/demo/units/finetune/minilm/bbc-news/seed-0", options)
    True
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

KEPT = 8  # checkpoints (with their examples) whose evaluations are kept at once
_STORES: OrderedDict[tuple, dict] = OrderedDict()


def _fingerprint(checkpoint: str) -> tuple:
    path = Path(checkpoint)
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
    return tuple((file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files
                 if file.is_file())


def shared_evaluations(checkpoint: str, options, device: str | None = None) -> dict:
    """The store of evaluations of `checkpoint` on the examples of `options` (a frozen
    DataOptions) on `device`: a dict {frozenset of pruned (kind, unit): Evaluation}."""
    key = (str(Path(checkpoint).resolve()), _fingerprint(checkpoint), options, device)
    store = _STORES.setdefault(key, {})
    _STORES.move_to_end(key)
    while len(_STORES) > KEPT:
        _STORES.popitem(last=False)
    return store
