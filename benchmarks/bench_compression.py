"""Benchmark: structured compression of a fine-tuned encoder, heads and feed-forward neurons.

On a fine-tuned checkpoint (default runs/minilm-sst2: the real all-MiniLM-L6-v2 fine-tuned on
2,000 SST-2 sentences, as in the README) four models are compared:

  full       the checkpoint as it is
  heads      50% of the heads removed (least important first, l1 per layer, as
             `headcount curve` ranks them)
  neurons    50% of the feed-forward neurons removed, ranked the same way
  both       both at once (`--units both --ratio 0.5`)

Importance of heads and neurons comes from one backward pass over --importance-examples
SST-2 training sentences (`unit_importance`). For each model: parameters (all, and of the
encoder layers), encoder FLOPs per example at --length tokens (`headcount.cost`), SST-2 dev
accuracy (all 872 sentences), and CPU latency of a forward pass at batch 1 and at batch
--batch-size on random sequences of exactly --length tokens: --repeats timed runs of every
model, interleaved within each repeat (drift hits them alike), median reported. The speed-up
is compared with the FLOP prediction (full FLOPs / pruned FLOPs of the encoder layers).

Loading: the "both" checkpoint is saved as headcount saves pruned checkpoints, then loaded in
a fresh interpreter by stock transformers (`AutoModelForSequenceClassification.
from_pretrained(DIR, trust_remote_code=True)`, no headcount on the import path) and by
headcount; the outputs are compared and the load times reported (median of --load-repeats).

Usage:
    python benchmarks/bench_compression.py --model runs/minilm-sst2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_importance as bench  # noqa: E402
from bench_pruning import time_interleaved  # noqa: E402

from headcount.checkpoints import save_pruned  # noqa: E402
from headcount.cost import encoder_cost  # noqa: E402
from headcount.data import prepare_data  # noqa: E402
from headcount.evaluation import evaluate  # noqa: E402
from headcount.importance import normalize, unit_importance  # noqa: E402
from headcount.io import write_json  # noqa: E402
from headcount.layouts import unit_layout  # noqa: E402
from headcount.models import load_model  # noqa: E402
from headcount.pruning import least_important_first  # noqa: E402
from headcount.removal import remove_units  # noqa: E402
from headcount.tasks.registry import resolve_task  # noqa: E402

KIND = "classification"
VARIANTS = {"full": (), "heads": ("heads",), "neurons": ("neurons",),
            "both": ("heads", "neurons")}

STOCK_LOAD = """
import json, os, sys, time
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p, "headcount"))]
import torch
from transformers import AutoModelForSequenceClassification
started = time.perf_counter()
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
seconds = time.perf_counter() - started
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
print(json.dumps({"seconds": seconds, "logits": logits.tolist()}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/minilm-sst2")
    parser.add_argument("--data-dir", default=str(bench.DEFAULT_DATA))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--importance-examples", type=int, default=512)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3,
                        help="batches of --batch-size per timed run")
    parser.add_argument("--singles", type=int, default=32,
                        help="batch-1 forwards per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--idle-wait", type=float, default=0.0)
    parser.add_argument("--out", default="benchmarks/results/compression-cpu.json")
    return parser.parse_args(argv)


def pruned_variants(model, scores: dict, ratio: float) -> dict:
    """The four models: each kind of unit pruned least-important-first (l1 per layer)."""
    chosen = {}
    for kind, raw in scores.items():
        layout = unit_layout(model, kind)
        order = least_important_first(normalize(raw, "l1"))
        chosen[kind] = order[:round(ratio * layout.total_units)]
    variants = {}
    for name, kinds in VARIANTS.items():
        variants[name] = remove_units(copy.deepcopy(model), {k: chosen[k] for k in kinds})
    return variants


def fixed_batches(config, length: int, batch_size: int, count: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1000, config.vocab_size, (batch_size, length), generator=generator)
            for _ in range(count)]


def forward_all(model, batches) -> None:
    with torch.inference_mode():
        for ids in batches:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))


def latencies(variants, args, device) -> dict:
    config = variants["full"].config
    large = fixed_batches(config, args.length, args.batch_size, args.batches)
    single = fixed_batches(config, args.length, 1, args.singles, seed=1)
    results = {}
    for label, batches, per_run in (("batch", large, args.batches * args.batch_size),
                                    ("single", single, args.singles)):
        print(f"timing forward passes at batch {batches[0].shape[0]}, length {args.length}: "
              f"{args.repeats} interleaved repeats", flush=True)
        for model in variants.values():
            forward_all(model, batches[:1])  # warm-up
        workloads = {name: (lambda m=model, b=batches: forward_all(m, b))
                     for name, model in variants.items()}
        runs, _ = time_interleaved(workloads, device, args.repeats, args.idle_wait)
        results[label] = {name: {**run, "per_example_ms": 1000 * run["median_s"] / per_run}
                          for name, run in runs.items()}
    return results


def stock_load(directory: Path, ids: torch.Tensor, repeats: int) -> dict:
    """Median time of stock transformers' load in a fresh interpreter, and its logits."""
    times, logits = [], None
    for _ in range(repeats):
        result = subprocess.run(
            [sys.executable, "-c", STOCK_LOAD, str(directory), json.dumps(ids.tolist())],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            check=True)
        record = json.loads(result.stdout.strip().splitlines()[-1])
        times.append(record["seconds"])
        logits = torch.tensor(record["logits"])
    return {"median_s": statistics.median(times), "times_s": times, "logits": logits}


def loading(variants, tokenizer, args) -> dict:
    ids = torch.randint(1000, 30000, (2, 24), generator=torch.Generator().manual_seed(2))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("full", "both"):
            directory = Path(tmp) / name
            save_pruned(variants[name], directory, tokenizer)
            stock = stock_load(directory, ids, args.load_repeats)
            times = []
            for _ in range(args.load_repeats):
                started = time.perf_counter()
                ours = load_model(str(directory), "checkpoint", device="cpu").model
                times.append(time.perf_counter() - started)
            with torch.no_grad():
                expected = ours(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            out[name] = {"stock_median_s": stock["median_s"], "stock_times_s": stock["times_s"],
                         "headcount_median_s": statistics.median(times),
                         "max_abs_diff": float((stock["logits"] - expected).abs().max())}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu")
    loaded = load_model(args.model, "checkpoint", device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    task = resolve_task("sst2", data_dir=args.data_dir)
    train = prepare_data(task, tokenizer, model.config, split="train",
                         max_examples=args.importance_examples, max_length=args.length)
    dev = prepare_data(task, tokenizer, model.config, split="dev", max_length=args.length)
    started = time.perf_counter()
    scores = unit_importance(model, train.batches(32), KIND, units=("heads", "neurons"))
    importance_s = time.perf_counter() - started
    variants = pruned_variants(model, {k: v.raw for k, v in scores.items()}, args.ratio)
    rows = {}
    for name, variant in variants.items():
        cost = encoder_cost(variant, args.length)
        accuracy = evaluate(variant, dev.batches(64), KIND, "accuracy").score
        rows[name] = {"parameters": sum(p.numel() for p in variant.parameters()),
                      "encoder_parameters": cost.parameters, "encoder_flops": cost.flops,
                      "heads": cost.heads, "neurons": cost.neurons, "accuracy": accuracy}
        print(f"{name:8s} params {rows[name]['parameters']:,} encoder GFLOPs/example "
              f"{cost.flops / 1e9:.3f} accuracy {accuracy:.4f}", flush=True)
    timing = latencies(variants, args, device)
    for name, row in rows.items():
        predicted = rows["full"]["encoder_flops"] / row["encoder_flops"]
        for label in ("batch", "single"):
            runs = timing[label]
            measured = runs["full"]["median_s"] / runs[name]["median_s"]
            row[f"{label}_ms_per_example"] = runs[name]["per_example_ms"]
            row[f"{label}_speedup"] = measured
            row[f"{label}_speedup_vs_flops"] = measured / predicted
        row["flop_speedup"] = predicted
        print(f"{name:8s} FLOP speed-up {predicted:.2f}x; measured batch {args.batch_size}: "
              f"{row['batch_speedup']:.2f}x ({row['batch_speedup_vs_flops']:.0%} of it), "
              f"batch 1: {row['single_speedup']:.2f}x", flush=True)
    loads = loading(variants, tokenizer, args)
    for name, load in loads.items():
        print(f"load {name}: stock transformers {load['stock_median_s']:.2f} s, headcount "
              f"{load['headcount_median_s']:.2f} s, outputs differ by "
              f"{load['max_abs_diff']:.1e}", flush=True)
    header = bench.run_header("compression", args, device, bench.library_versions())
    write_json(args.out, {**header, "importance_seconds": importance_s, "models": rows,
                          "timing": timing, "loading": loads, "uptime_load":
                          os.getloadavg()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
