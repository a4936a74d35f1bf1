"""Score a model (optionally with heads gated off) on a task with the task's own metric."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from headcount.backoff import BatchBackoff
from headcount.distributed import gather_across_processes, sum_across_processes
from headcount.forward import batches_on_device, eval_mode, task_outputs
from headcount.tasks.metrics import MAIN_METRIC, compute_metrics

# Metric used when a task does not fix one (local files).
DEFAULT_METRIC = {"classification": "accuracy", "regression": "pearson_spearman",
                  "mlm": "recall@1"}


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # e.g. {"accuracy": .., "f1": .., "accuracy_f1": ..}
    main: str                  # key of the headline number in `metrics`
    mean_loss: float
    num_examples: int
    # The batch size the evaluation ended with (smaller than asked after running out of
    # memory, see `headcount.backoff`); None when not recorded (older records).
    final_batch_size: int | None = None

    @property
    def score(self) -> float:
        return self.metrics[self.main]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    metric: str | None = None,
    *,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> Evaluation:
    """Metric(s) of `model` over `batches`; masked LM gives recall@1 over masked positions.
    Under torch.distributed, each process passes its own share of the examples. A batch
    that runs out of memory is evaluated in halves (`backoff`, shared by the evaluations of
    a curve so that they all start from the size that fits).

    Example:
        >>> result = evaluate(model, data.batches(64), data.kind, task.metric)
        >>> result.metrics
        {'accuracy': 0.91}
    """
    metric = metric or DEFAULT_METRIC[kind]
    device = next(model.parameters()).device
    backoff = backoff or BatchBackoff()
    step = partial(_evaluation_parts, model, kind)
    predictions, references = [], []
    total_loss, count = 0.0, 0
    with eval_mode(model):
        for batch in batches_on_device(batches, device, desc="evaluate", progress=progress,
                                       total=total):
            batch_predictions, batch_references, loss_sum, size = backoff.run(step, batch)
            predictions += batch_predictions
            references += batch_references
            total_loss += loss_sum
            count += size
    # Under torch.distributed each process scored its own share: pool them before the metric
    # (MCC, F1 and correlations are not means of per-process values).
    predictions = gather_across_processes(_concatenated(predictions))
    references = gather_across_processes(_concatenated(references))
    totals = sum_across_processes(torch.tensor([total_loss, count], dtype=torch.float64,
                                               device=device))
    total_loss, count = float(totals[0]), int(totals[1])
    metrics = compute_metrics(metric, predictions.numpy(), references.numpy())
    return Evaluation(metrics, MAIN_METRIC[metric], total_loss / max(count, 1), count,
                      backoff.final_size)


def _evaluation_parts(model: nn.Module, kind: str, batch: dict[str, torch.Tensor]):
    """One batch's additive parts: ([predictions], [references], loss sum, examples)."""
    outputs = task_outputs(model, batch, kind)
    return ([outputs.predictions.cpu()], [outputs.references.cpu()],
            float(outputs.losses.sum()), outputs.losses.shape[0])


def _concatenated(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0)
