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

This is `headcount.jobs.compress.compare_job` (the study's `[compress]` section runs it
too): the Fisher (both kinds) and importance come from the same --examples calibration
examples (the task's training split, --length tokens, batches of --batch-size) and are
computed once; the search, rearrangement and tuning run per budget. For every model: the
dev metric relative to the unpruned one, the FLOPs kept, and the measured CPU latency of a
forward pass at batch --batch-size (and at batch 1) on random sequences of --length tokens
(the speed-up is the ratio of medians over rounds that time the compressed and the
unpruned model alternately, so a change in load hits both). Finally one real
`compress_job` at --time-budget of the FLOPs and one at the same share of the latency
(the lookup table measured on this machine) with --examples calibration examples are timed
end to end, and their measured latency is compared with the budget.

Usage:
    python benchmarks/bench_compress.py --model runs/minilm-sst2 --task sst2
    python benchmarks/bench_compress.py --model runs/minilm-bbc --task dir:BBC_DIR --split all
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_importance as bench  # noqa: E402

from headcount.io import write_json  # noqa: E402
from headcount.jobs.compress import (  # noqa: E402
    CompareRequest,
    CompressRequest,
    compare_job,
    compress_job,
)
from headcount.jobs.prepared import DataOptions  # noqa: E402
from headcount.mask_search import Budget  # noqa: E402


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
    parser.add_argument("--time-budget", type=float, default=0.6)
    parser.add_argument("--out", default="benchmarks/results/compress-cpu.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu")
    options = DataOptions(args.task, data_dir=args.data_dir, split=args.split)
    eval_options = replace(options, split=args.eval_split, max_length=args.length)
    started = time.perf_counter()
    rows = compare_job(args.model, options, eval_options,
                       CompareRequest(budgets=tuple(args.budgets), seq_length=args.length,
                                      batch_size=args.batch_size,
                                      max_examples=args.examples),
                       device=device, progress=True)
    compare_s = time.perf_counter() - started
    for row in rows:
        print(f"{row['budget']:.1f} {row['method']:14s} relative {row['relative']:.4f} FLOPs "
              f"{row['flops_kept']:.3f} latency {row['latency_s'] * 1000:.0f} ms "
              f"speed-up {row['speedup']:.2f}x (batch 1: {row['speedup_batch1']:.2f}x)",
              flush=True)
    jobs = {}
    for kind in ("flops", "latency"):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            record = compress_job(args.model, options,
                                  CompressRequest(Budget(kind, args.time_budget),
                                                  seq_length=args.length,
                                                  batch_size=args.batch_size,
                                                  max_examples=args.examples,
                                                  eval_split=args.eval_split),
                                  str(Path(tmp) / "out"), device=device)
            seconds = time.perf_counter() - started
        jobs[kind] = {"seconds": seconds, "record": record}
        measured = record["latency_after_s"] / record["latency_before_s"]
        predicted = record["latency_predicted_s"]
        print(f"compress_job at {kind}={args.time_budget}: {seconds:.0f} s end to end; steps "
              + ", ".join(f"{k} {v:.0f} s" for k, v in record["seconds"].items())
              + f"; relative {record['metric_after'] / record['metric_before']:.4f}; "
              f"FLOPs {record['flops_after'] / record['flops_before']:.3f}, measured latency "
              f"{measured:.3f} of the model's"
              + (f" (table's prediction {predicted / record['latency_before_s']:.3f})"
                 if predicted else ""), flush=True)
    header = bench.run_header("compress", args, device, bench.library_versions())
    write_json(args.out, {**header, "rows": rows, "compare_seconds": compare_s,
                          "jobs": jobs, "load_average": os.getloadavg()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
