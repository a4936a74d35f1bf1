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

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn
from tqdm.auto import tqdm

from headcount.checkpoints import check_empty_target, save_pruned_atomically
from headcount.choices import FISHER_KINDS, check_choice
from headcount.compression import StepTimer, compress_model, heads_only_model
from headcount.cost import encoder_cost, unit_prices
from headcount.errors import ConfigError
from headcount.fisher import mask_fisher
from headcount.importance import unit_importance
from headcount.io import versions
from headcount.jobs.prepared import DataOptions, PreparedTask, prepare_for, prepare_task
from headcount.latency import (
    latency_prices,
    latency_table,
    measure_model_latency,
    measure_speedup,
)
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Budget


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


@dataclass
class _Measured:
    """The model's metric, cost and latency at one point (before or after)."""

    evaluation: object
    cost: object
    latency_s: float | None = None


def _measure(model, evaluation: PreparedTask, request: CompressRequest,
             progress: bool) -> _Measured:
    return _Measured(evaluation.evaluate(model, progress=progress),
                     encoder_cost(model, request.seq_length))


def _time_both(original, compressed, request: CompressRequest, before: _Measured,
               after: _Measured) -> None:
    """Latency before and after from the same interleaved rounds (`measure_speedup`), so
    that their ratio does not carry a change in the machine's load between the two."""
    after.latency_s, before.latency_s = measure_speedup(original, compressed,
                                                        request.batch_size, request.seq_length)


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
    steps = StepTimer()
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
    original = copy.deepcopy(network)  # timed against the compressed model at the end
    steps.done("measure before")
    fisher = mask_fisher(network, prepared.batches(), prepared.data.kind,
                         per_example=request.fisher == "per-example", progress=progress,
                         total=prepared.num_batches())
    steps.done("fisher")
    prices, latency = _prices(network, request)
    done = compress_model(network, fisher, prices, request.budget.fraction,
                          prepared.batches() if request.tune else None,
                          rearranged=request.rearrange,
                          first_token_only=prepared.data.kind != "mlm", progress=progress,
                          timer=steps)
    after = _measure(network, evaluation, request, progress)
    _time_both(original, network, request, before, after)
    del original
    steps.done("measure after")
    record = {
        "model": model, "task": options.task, "budget": str(request.budget),
        "request": {key: value for key, value in vars(request).items() if key != "budget"},
        "calibration_examples": len(prepared.data),
        "eval": {"task": eval_options.task, "split": eval_options.split,
                 "examples": after.evaluation.num_examples},
        **_comparison(network, before, after),
        "search": {"predicted_cost": done.search.cost, "full_cost": prices.full,
                   "fisher_kept": done.search.importance, "fisher": request.fisher},
        **_latency_fields(network, latency),
        "tuning": None if done.tuning is None else vars(done.tuning),
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


# The ways of meeting a FLOPs budget that `compare_job` measures side by side.
METHODS = ("heads-only", "search", "compress", "compress-batch")


@dataclass(frozen=True)
class CompareRequest:
    """`compare_job`'s settings: the FLOPs `budgets`, the calibration examples (`seq_length`
    tokens, batches of `batch_size`, at most `max_examples`), and whether to time the
    models (`latency`, forward passes at batch `batch_size` and `seq_length`)."""

    budgets: tuple[float, ...] = (0.8, 0.6, 0.4)
    seq_length: int = 128
    batch_size: int = 32
    max_examples: int = 512
    latency: bool = True


def _variants(prepared: PreparedTask, fishers: dict, head_scores, fraction: float,
              request: CompareRequest) -> dict[str, Callable[[], nn.Module]]:
    model = prepared.model
    prices = unit_prices(model, request.seq_length, "flops")
    kind = prepared.data.kind

    def compressed(fisher, tuned: bool):
        return compress_model(copy.deepcopy(model), fisher, prices, fraction,
                              prepared.batches() if tuned else None, rearranged=tuned,
                              first_token_only=kind != "mlm").model

    # Built one at a time by the caller: four copies of a large model at once need not fit.
    return {
        "heads-only": lambda: heads_only_model(model, head_scores, fraction,
                                               request.seq_length),
        "search": lambda: compressed(fishers["per-example"], tuned=False),
        "compress": lambda: compressed(fishers["per-example"], tuned=True),
        "compress-batch": lambda: compressed(fishers["batch"], tuned=True),
    }


def compare_job(model: str, options: DataOptions, eval_options: DataOptions,
                request: CompareRequest, *, device=None, progress: bool = False) -> list[dict]:
    """For each FLOPs budget, the metric (on `eval_options`), FLOPs, parameters and measured
    latency of the model compressed by each of `METHODS`: heads alone in importance order,
    the search on the exact Fisher, the full method, and the full method on Kwon et al.'s
    batch-summed Fisher. One row per budget and method, plus the unpruned model's.

    Example:
        >>> rows = compare_job("runs/minilm-sst2", DataOptions("sst2", data_dir=glue),
        ...                    DataOptions("sst2", data_dir=glue, split="dev"),
        ...                    CompareRequest(budgets=(0.6,)))
    """
    calibration = replace(options, max_examples=request.max_examples,
                          max_length=request.seq_length, batch_size=request.batch_size)
    prepared = prepare_task(model, calibration, device=device)
    network, kind = prepared.model, prepared.data.kind
    eval_task = eval_options.resolve()
    evaluation = PreparedTask(eval_task, prepared.loaded,
                              prepare_for(prepared.loaded, eval_task, eval_options),
                              eval_options)
    fishers = {mode: mask_fisher(network, prepared.batches(), kind, per_example=mode ==
                                 "per-example", progress=progress) for mode in FISHER_KINDS}
    head_scores = unit_importance(network, prepared.batches(), kind)["heads"].raw
    base = _row(network, network, evaluation, request, None)
    rows = [{"budget": 1.0, "method": "unpruned", **base}]
    with tqdm(total=len(request.budgets) * len(METHODS), disable=not progress,
              desc="compress and evaluate", unit="model") as bar:
        for fraction in request.budgets:
            for method, build in _variants(prepared, fishers, head_scores, fraction,
                                           request).items():
                bar.set_postfix_str(f"{method} at {fraction:g} of the FLOPs")
                row = _row(build(), network, evaluation, request, base)
                rows.append({"budget": fraction, "method": method, **row})
                bar.update()
    return rows


def _row(variant, full, evaluation: PreparedTask, request: CompareRequest,
         base: dict | None) -> dict:
    result = evaluation.evaluate(variant)
    cost, full_cost = encoder_cost(variant, request.seq_length), \
        encoder_cost(full, request.seq_length)
    # The speed-up is timed against the full model in the same interleaved rounds: a single
    # timing of the full model taken earlier would carry whatever load the machine had then.
    latency = full_latency = single = full_single = None
    if request.latency and base is None:
        latency = measure_model_latency(variant, request.batch_size, request.seq_length)
    elif request.latency:
        latency, full_latency = measure_speedup(full, variant, request.batch_size,
                                                request.seq_length)
        # One example at a time too: the fixed cost of each call weighs more there.
        single, full_single = measure_speedup(full, variant, 1, request.seq_length)
    return {
        "metric": result.main, "value": result.score,
        "relative": result.score / base["value"] if base and base["value"] else 1.0,
        "flops_kept": cost.macs / full_cost.macs,
        "parameters_kept": cost.parameters / full_cost.parameters,
        "heads": cost.heads, "neurons": cost.neurons, "latency_s": latency,
        "speedup": full_latency / latency if full_latency and latency else 1.0,
        "speedup_batch1": full_single / single if full_single and single else 1.0,
    }
