"""The `compress` job: heads and neurons pruned to a FLOPs, parameter or latency budget
without retraining (Kwon et al. 2022, on headcount's exact per-example Fisher).

Steps, each timed: the mask Fisher on calibration examples; the mask search under the
budget; the rearrangement of each layer's mask with its Fisher block; least-squares mask
tuning against the unpruned model, folded into the weights; physical removal and a portable
checkpoint with `compress.json`. The metric is measured before and after on an evaluation
split, and the latency of the model before and after at the calibration's batch size and
length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from headcount.checkpoints import check_empty_target, save_pruned_atomically
from headcount.choices import FISHER_KINDS, check_choice
from headcount.cost import encoder_cost, unit_prices
from headcount.errors import ConfigError
from headcount.fisher import mask_fisher
from headcount.io import versions
from headcount.jobs.prepared import DataOptions, PreparedTask, prepare_for, prepare_task
from headcount.latency import latency_prices, latency_table, measure_model_latency
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Budget, search_masks
from headcount.rearrange import rearrange
from headcount.removal import remove_units
from headcount.tuning import fold_scales, tune_masks


@dataclass(frozen=True)
class CompressRequest:
    """How to compress: the `budget`, the calibration inputs (`seq_length` tokens, batches of
    `batch_size`, at most `max_examples`), which steps run (`rearrange`, `tune`), the Fisher
    (`per-example`, exact, or Kwon et al.'s `batch`-summed one), and what the metric is
    measured on before and after (`eval_split` of the task, default dev, or `eval_task`)."""

    budget: Budget
    seq_length: int = 128
    batch_size: int = 32
    max_examples: int = 2048
    rearrange: bool = True
    tune: bool = True
    fisher: str = "per-example"
    eval_split: str | None = None
    eval_task: str | None = None

    def check(self) -> None:
        check_choice("Fisher", self.fisher, FISHER_KINDS)
        for flag, value in (("--seq-length", self.seq_length),
                            ("--batch-size", self.batch_size),
                            ("--max-examples", self.max_examples)):
            if value < 1:
                raise ConfigError(f"{flag} {value} must be at least 1")
        if self.eval_split and self.eval_task:
            raise ConfigError("give either --eval-split or --eval-task, not both")


def _eval_options(options: DataOptions, request: CompressRequest) -> DataOptions:
    """The examples the metric is measured on, before and after."""
    if request.eval_task:
        return replace(options, task=request.eval_task, split="dev", max_examples=None,
                       fraction=None)
    task = options.task
    has_dev = not task.startswith(("file:", "mlm:"))
    if request.eval_split is None and not has_dev:
        raise ConfigError(f"{task} has no dev split to measure the metric before and after "
                          "on: give --eval-split or --eval-task")
    return replace(options, split=request.eval_split or "dev", max_examples=None,
                   fraction=None)


def _calibration(model: str, options: DataOptions, request: CompressRequest,
                 device) -> PreparedTask:
    calibration = replace(options, max_examples=request.max_examples,
                          max_length=request.seq_length, batch_size=request.batch_size)
    prepared = prepare_task(model, calibration, device=device)
    if len(prepared.data) < request.batch_size:
        raise ConfigError(f"the calibration set has {len(prepared.data)} examples, fewer than "
                          f"one batch of {request.batch_size}: give more examples or a "
                          "smaller --batch-size")
    return prepared


def _prices(model, request: CompressRequest):
    if request.budget.kind != "latency":
        return unit_prices(model, request.seq_length, request.budget.kind), None
    table, cached = latency_table(model, request.batch_size, request.seq_length)
    return latency_prices(table), {"table": table, "cached": cached}


def _masks(model, kept: dict) -> tuple[torch.Tensor, torch.Tensor]:
    heads, neurons = head_layout(model), neuron_layout(model)
    head_mask = torch.zeros(heads.num_layers, heads.num_heads)
    neuron_mask = torch.zeros(neurons.num_layers, neurons.num_neurons)
    for layer, unit in kept["heads"]:
        head_mask[layer, unit] = 1
    for layer, unit in kept["neurons"]:
        neuron_mask[layer, unit] = 1
    return head_mask, neuron_mask


def _pruned_units(model, head_gates, neuron_gates) -> dict[str, list]:
    heads, neurons = head_layout(model), neuron_layout(model)
    return {
        "heads": [(layer, h) for layer, kept in enumerate(heads.kept) for h in kept
                  if float(head_gates[layer, h]) == 0],
        "neurons": [(layer, j) for layer, kept in enumerate(neurons.kept) for j in kept
                    if float(neuron_gates[layer, j]) == 0],
    }


class _Steps:
    """Wall time of each step, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._started
        self._started = now


def _search(prepared: PreparedTask, request: CompressRequest, progress: bool, steps: _Steps):
    """Fisher, search and (optionally) rearrangement: the kept units and what led to them."""
    model = prepared.model
    fisher = mask_fisher(model, prepared.batches(), prepared.data.kind,
                         per_example=request.fisher == "per-example", progress=progress,
                         total=prepared.num_batches())
    steps.done("fisher")
    prices, latency = _prices(model, request)
    present = {"heads": [list(k) for k in head_layout(model).kept],
               "neurons": [list(k) for k in neuron_layout(model).kept]}
    result = search_masks(fisher.diagonal, present, prices, request.budget.fraction)
    steps.done("search")
    kept = result.kept
    if request.rearrange:
        kept = {kind: rearrange(fisher.blocks[kind], kept[kind], present[kind])
                for kind in ("heads", "neurons")}
        steps.done("rearrange")
    return kept, result, prices, latency


@dataclass
class _Measured:
    """The model's metric, cost and latency at one point (before or after)."""

    evaluation: object
    cost: object
    latency_s: float


def _measure(model, evaluation: PreparedTask, request: CompressRequest,
             progress: bool) -> _Measured:
    return _Measured(evaluation.evaluate(model, progress=progress),
                     encoder_cost(model, request.seq_length),
                     measure_model_latency(model, request.batch_size, request.seq_length))


def compress_job(model: str, options: DataOptions, request: CompressRequest, out: str, *,
                 device=None, progress: bool = False) -> dict:
    """Compress `model` to `request.budget` on calibration examples of `options.task` and
    save the pruned model to `out`; the `compress.json` record.

    Example:
        >>> record = compress_job("runs/minilm-sst2", DataOptions("sst2", data_dir=glue),
        ...                       CompressRequest(Budget.parse("flops=0.6")), "minilm-60")
        >>> record["metric_after"] / record["metric_before"]
    """
    request.check()
    check_empty_target(out)
    eval_options = _eval_options(options, request)
    steps = _Steps()
    prepared = _calibration(model, options, request, device)
    network = prepared.model
    if head_layout(network).shared_layers:
        raise ConfigError("compress needs one set of weights per layer; ALBERT's layers share "
                          "theirs (prune its heads with `headcount prune`)")
    eval_task = eval_options.resolve()
    evaluation = PreparedTask(eval_task, prepared.loaded,
                              prepare_for(prepared.loaded, eval_task, eval_options),
                              eval_options)
    before = _measure(network, evaluation, request, progress)
    steps.done("measure before")
    kept, result, prices, latency = _search(prepared, request, progress, steps)
    head_gates, neuron_gates = _masks(network, kept)
    tuning = None
    if request.tune:
        head_gates, neuron_gates, tuning = tune_masks(
            network, prepared.batches(), head_gates, neuron_gates,
            first_token_only=prepared.data.kind != "mlm", progress=progress)
        fold_scales(network, head_gates, neuron_gates)
        steps.done("tune")
    remove_units(network, _pruned_units(network, head_gates, neuron_gates))
    after = _measure(network, evaluation, request, progress)
    steps.done("measure after")
    record = {
        "model": model, "task": options.task, "budget": str(request.budget),
        "request": {key: value for key, value in vars(request).items() if key != "budget"},
        "calibration_examples": len(prepared.data),
        "eval": {"task": eval_options.task, "split": eval_options.split,
                 "examples": after.evaluation.num_examples},
        **_comparison(network, before, after),
        "search": {"predicted_cost": result.cost, "full_cost": prices.full,
                   "fisher_kept": result.importance, "fisher": request.fisher},
        **_latency_fields(network, latency),
        "tuning": None if tuning is None else vars(tuning),
        "versions": versions(),
    }
    save_pruned_atomically(network, out, prepared.loaded.tokenizer,
                           {"compress.json": {**record, "seconds": steps.seconds}})
    steps.done("save")
    return {**record, "seconds": steps.seconds}


def _comparison(network, before: _Measured, after: _Measured) -> dict:
    return {
        "main_metric": before.evaluation.main, "metric_before": before.evaluation.score,
        "metric_after": after.evaluation.score, "metrics_before": before.evaluation.metrics,
        "metrics_after": after.evaluation.metrics,
        "heads_per_layer": [len(k) for k in head_layout(network).kept],
        "neurons_per_layer": [len(k) for k in neuron_layout(network).kept],
        "flops_before": before.cost.flops, "flops_after": after.cost.flops,
        "encoder_parameters_before": before.cost.parameters,
        "encoder_parameters_after": after.cost.parameters,
        "other_parameters": after.cost.other_parameters,
        "latency_before_s": before.latency_s, "latency_after_s": after.latency_s,
    }


def _latency_fields(network, latency: dict | None) -> dict:
    """Under a latency budget: the table's prediction for the compressed model."""
    if latency is None:
        return {"latency_predicted_s": None, "latency_table_cached": None}
    predicted = latency["table"].predict([len(k) for k in head_layout(network).kept],
                                         [len(k) for k in neuron_layout(network).kept])
    return {"latency_predicted_s": predicted, "latency_table_cached": latency["cached"]}
