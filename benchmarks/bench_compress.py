"""Benchmark: `headcount compress` against simpler ways to reach a FLOPs budget.

On a fine-tuned checkpoint and its task (default: MiniLM fine-tuned on SST-2, as in the
README), for FLOPs budgets --budgets (default 0.9 ... 0.4 of the encoder layers' FLOPs at
--length tokens), four ways to meet the budget:

  heads-only     heads removed least important first (gradient importance, l1 per layer,
                 as `headcount curve` ranks them) until the FLOPs fit: head pruning as the
                 reference study does it
  search         compress's mask search on the exact per-example Fisher, no rearrangement,
                 no tuning
  compress       search + rearrangement + mask tuning (the full method)
  compress-batch the full method on the batch-summed Fisher of Kwon et al.'s code

The Fisher (both kinds) and importance come from the same --examples calibration examples
(the task's training split, --length tokens, batches of --batch-size) and are computed once;
the search, rearrangement and tuning run per budget. For every model: the task's dev metric
relative to the unpruned one, the FLOPs kept, and the measured CPU speed-up of a forward pass
at batch --batch-size and at batch 1 on random sequences of --length tokens (median of
--repeats runs, all models of a budget interleaved). Finally one real `compress_job` at
--time-budget with --examples calibration examples is timed end to end.

Usage:
    python benchmarks/bench_compress.py --model runs/minilm-sst2 --task sst2
    python benchmarks/bench_compress.py --model runs/minilm-bbc --task dir:BBC_DIR --split all
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_importance as bench  # noqa: E402
from bench_compression import fixed_batches, forward_all  # noqa: E402

from headcount.cost import encoder_cost, unit_costs, unit_prices  # noqa: E402
from headcount.fisher import mask_fisher  # noqa: E402
from headcount.importance import normalize, unit_importance  # noqa: E402
from headcount.io import write_json  # noqa: E402
from headcount.jobs.compress import CompressRequest, compress_job  # noqa: E402
from headcount.jobs.prepared import (  # noqa: E402
    DataOptions,
    PreparedTask,
    prepare_for,
    prepare_task,
)
from headcount.layouts import head_layout, neuron_layout  # noqa: E402
from headcount.mask_search import Budget, search_masks  # noqa: E402
from headcount.pruning import least_important_first  # noqa: E402
from headcount.rearrange import rearrange  # noqa: E402
from headcount.removal import remove_units  # noqa: E402
from headcount.tuning import fold_scales, tune_masks  # noqa: E402

METHODS = ("heads-only", "search", "compress", "compress-batch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/minilm-sst2")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", default=str(bench.DEFAULT_DATA))
    parser.add_argument("--split", default="train", help="calibration split")
    parser.add_argument("--eval-split", default="dev")
    parser.add_argument("--budgets", type=float, nargs="+",
                        default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=0.6)
    parser.add_argument("--idle-wait", type=float, default=0.0)
    parser.add_argument("--out", default="benchmarks/results/compress-cpu.json")
    return parser.parse_args(argv)


def heads_only(model, head_scores: torch.Tensor, fraction: float, length: int):
    """Heads removed least important first until the encoder FLOPs fit the budget."""
    full = encoder_cost(model, length).macs
    per_head = unit_costs(model, length).head_macs
    needed = max(0, full - fraction * full)
    count = min(head_layout(model).total_heads, -(-int(needed) // per_head))
    order = least_important_first(normalize(head_scores, "l1"))
    return remove_units(copy.deepcopy(model), {"heads": order[:count]})


def masks_of(model, kept):
    heads, neurons = head_layout(model), neuron_layout(model)
    head_mask = torch.zeros(heads.num_layers, heads.num_heads)
    neuron_mask = torch.zeros(neurons.num_layers, neurons.num_neurons)
    for layer, unit in kept["heads"]:
        head_mask[layer, unit] = 1
    for layer, unit in kept["neurons"]:
        neuron_mask[layer, unit] = 1
    return head_mask, neuron_mask


def searched(model, fisher, fraction, length, calibration, *, tune: bool):
    """The model compress makes from `fisher` (rearranged and tuned when `tune`)."""
    present = {"heads": [list(k) for k in head_layout(model).kept],
               "neurons": [list(k) for k in neuron_layout(model).kept]}
    kept = search_masks(fisher.diagonal, present, unit_prices(model, length, "flops"),
                        fraction).kept
    network = copy.deepcopy(model)
    head_mask, neuron_mask = masks_of(network, kept)
    if tune:
        kept = {kind: rearrange(fisher.blocks[kind], kept[kind], present[kind])
                for kind in kept}
        head_mask, neuron_mask = masks_of(network, kept)
        head_mask, neuron_mask, _ = tune_masks(network, calibration.batches(), head_mask,
                                               neuron_mask, first_token_only=True)
        fold_scales(network, head_mask, neuron_mask)
    pruned = {"heads": [(l_, h) for l_ in range(head_mask.shape[0])
                        for h in range(head_mask.shape[1]) if head_mask[l_, h] == 0],
              "neurons": [(l_, n) for l_ in range(neuron_mask.shape[0])
                          for n in range(neuron_mask.shape[1]) if neuron_mask[l_, n] == 0]}
    return remove_units(network, pruned)


def speed(models: dict, args, device) -> dict:
    config = next(iter(models.values())).config
    large = fixed_batches(config, args.length, args.batch_size, 2)
    single = fixed_batches(config, args.length, 1, 16, seed=1)
    out = {}
    for label, batches in (("batch", large), ("single", single)):
        for model in models.values():
            forward_all(model, batches[:1])
        times = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():
                seconds, _, _ = bench.timed(lambda m=model, b=batches: forward_all(m, b),
                                            device, args.idle_wait)
                times[name].append(seconds)
        medians = {name: statistics.median(values) for name, values in times.items()}
        out[label] = {name: medians["full"] / median for name, median in medians.items()}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu")
    options = DataOptions(args.task, data_dir=args.data_dir, split=args.split,
                          max_examples=args.examples, max_length=args.length,
                          batch_size=args.batch_size)
    calibration = prepare_task(args.model, options, device=device)
    model = calibration.model
    eval_options = replace(options, split=args.eval_split, max_examples=None)
    task = eval_options.resolve()
    dev = PreparedTask(task, calibration.loaded, prepare_for(calibration.loaded, task,
                                                             eval_options), eval_options)

    def score(candidate):
        return dev.evaluate(candidate).score

    base = score(model)
    started = time.perf_counter()
    fisher = {"per-example": mask_fisher(model, calibration.batches(), dev.data.kind),
              "batch": mask_fisher(model, calibration.batches(), dev.data.kind, per_example=False)}
    fisher_s = time.perf_counter() - started
    head_scores = unit_importance(model, calibration.batches(), dev.data.kind)["heads"].raw
    rows = []
    for fraction in args.budgets:
        models = {"full": model,
                  "heads-only": heads_only(model, head_scores, fraction, args.length),
                  "search": searched(model, fisher["per-example"], fraction, args.length,
                                     calibration, tune=False),
                  "compress": searched(model, fisher["per-example"], fraction, args.length,
                                       calibration, tune=True),
                  "compress-batch": searched(model, fisher["batch"], fraction, args.length,
                                             calibration, tune=True)}
        speeds = speed(models, args, device)
        for method in METHODS:
            candidate = models[method]
            metric = score(candidate)
            row = {"budget": fraction, "method": method, "metric": metric,
                   "relative": metric / base,
                   "flops_kept": encoder_cost(candidate, args.length).macs /
                   encoder_cost(model, args.length).macs,
                   "speedup_batch": speeds["batch"][method],
                   "speedup_single": speeds["single"][method]}
            rows.append(row)
            print(f"{fraction:.1f} {method:14s} relative {row['relative']:.4f} FLOPs "
                  f"{row['flops_kept']:.3f} speed-up batch {row['speedup_batch']:.2f}x "
                  f"single {row['speedup_single']:.2f}x", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        record = compress_job(args.model, replace(options, max_examples=None),
                              CompressRequest(Budget("flops", args.time_budget),
                                              seq_length=args.length,
                                              batch_size=args.batch_size,
                                              max_examples=args.examples,
                                              eval_split=args.eval_split),
                              str(Path(tmp) / "out"), device=device)
        job_s = time.perf_counter() - started
    print(f"compress_job at flops={args.time_budget}: {job_s:.0f} s end to end "
          f"({record['seconds']}); relative {record['metric_after'] / record['metric_before']:.4f}")
    header = bench.run_header("compress", args, device, bench.library_versions())
    write_json(args.out, {**header, "unpruned_metric": base, "fisher_seconds": fisher_s,
                          "rows": rows, "job_seconds": job_s, "job_record": record,
                          "load_average": os.getloadavg()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
