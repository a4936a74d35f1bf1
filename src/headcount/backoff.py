"""Out-of-memory back-off: a batch that does not fit is run again in halves, down to one
example, and the halves' results are added up.

Every loop over batches (importance, the other estimators, evaluation, drift, and the
curves through evaluation) writes its per-batch work as a function of one batch that
returns additive parts: tensors of sums, float or int totals, or lists (of predictions),
alone or in a tuple. `BatchBackoff.run(step, batch)` calls it; on an out-of-memory error
(CUDA's `torch.OutOfMemoryError`, or a CPU allocation failure) it runs the batch's rows
again in halves (halving again where needed, down to one example) and combines the
results with `+` (sums add, lists concatenate in order). Because each example's result
does not depend on the other rows of its batch, the combined result equals the unsplit one
up to floating-point summation order.

The smallest size that worked is remembered: later batches of the same loop are cut to it
at once instead of failing first, and `final_size` (the batch size the loop ended with) is
what records report. This is the idea of accelerate's `find_executable_batch_size`, applied
to one batch instead of restarting the whole loop, so that no finished batch is computed
twice.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

Batch = dict[str, torch.Tensor]
Result = TypeVar("Result")

# What CPU allocators and devices other than CUDA say when memory runs out; CUDA raises
# torch.OutOfMemoryError itself.
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory",
                          "cannot allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says that memory ran out (and a smaller batch may fit).

    Example:
        >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
        True
    """
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(text in message
                                                   for text in OUT_OF_MEMORY_MESSAGES)


def batch_rows(batch: Batch) -> int:
    """The number of examples in a batch (its first dimension)."""
    return next(iter(batch.values())).shape[0]


def rows_of(batch: Batch, start: int, stop: int) -> Batch:
    """Examples start..stop-1 of a batch (views, no copies; the padding stays as it is, so
    every example is computed exactly as in the whole batch)."""
    return {name: tensor[start:stop] for name, tensor in batch.items()}


def combine(first, second):
    """`first + second` element by element: tensors and numbers add, lists concatenate;
    tuples are combined position by position."""
    if isinstance(first, tuple):
        return tuple(combine(a, b) for a, b in zip(first, second, strict=True))
    return first + second


def release_memory() -> None:
    """Give the memory of a failed attempt back before the halves run."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BatchBackoff:
    """The back-off state of one loop (or of several loops on the same model and data,
    such as every evaluation of a pruning curve): `limit` is the most examples a forward
    pass may take (None until memory first ran out), `largest` the largest batch seen."""

    limit: int | None = None
    largest: int = 0

    @property
    def final_size(self) -> int | None:
        """The batch size the loop ended with: the batch size, or the reduced one after an
        out-of-memory error; None when no batch ran."""
        if self.largest == 0:
            return None
        return self.largest if self.limit is None else min(self.limit, self.largest)

    def run(self, step: Callable[[Batch], Result], batch: Batch) -> Result:
        """`step(batch)`, run in pieces of at most `limit` examples, halved on every
        out-of-memory error down to one example (an error at one example is raised).

        Example:
            >>> backoff = BatchBackoff()
            >>> loss_sum, count = backoff.run(lambda b: (float(losses(b).sum()), len(b)), batch)
            >>> backoff.final_size  # e.g. 16 after a batch of 32 did not fit
        """
        rows = batch_rows(batch)
        self.largest = max(self.largest, rows)
        result, start = None, 0
        while start < rows:
            stop = rows if self.limit is None else min(rows, start + self.limit)
            part = self._attempt(step, rows_of(batch, start, stop))
            if part is _DID_NOT_FIT:
                continue  # again from `start`, in pieces of the halved limit
            result = part if result is None else combine(result, part)
            start = stop
        return result

    def _attempt(self, step: Callable[[Batch], Result], piece: Batch):
        """`step(piece)`, or `_DID_NOT_FIT` after halving the limit below its size."""
        rows = batch_rows(piece)
        try:
            return step(piece)
        except Exception as error:  # only out-of-memory errors are retried
            if rows == 1 or not is_out_of_memory(error):
                raise
        # Outside the handler: the failed attempt's tensors (held by its traceback) can be
        # freed before the halves run.
        release_memory()
        self.limit = (rows + 1) // 2
        return _DID_NOT_FIT


_DID_NOT_FIT = object()
