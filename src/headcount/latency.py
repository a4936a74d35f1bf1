"""Latency of an encoder as a function of the heads and neurons each layer keeps, measured on
this device (for latency budgets, after Kwon et al. 2022).

One layer of the model, resized to n heads and no neurons, gives a(n); resized to no heads
and m neurons, f(m); with neither, z. A layer with n heads and m neurons then takes about
a(n) + f(m) − z, and the whole model Σ_layers (a(n_l) + f(m_l) − z) + rest, where `rest`
(embeddings, LayerNorms outside the layers, the task head) is the measured full model minus
its layers' sum. Heads are measured at every count, neurons on a grid (linear in between),
each the median of several runs at the given batch size and sequence length, on random
tokens. Tables are cached per model shape, device, batch size, length and torch version.

For the search, a(n) and f(m) are fitted as Kwon et al. do: flat up to a threshold number of
units (which every layer then keeps) and linear beyond it, so that every further head or
neuron costs the same.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from headcount.arch import distinct_layers, family_of
from headcount.io import write_json
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Prices
from headcount.resize import shrink_heads, shrink_neurons

NEURON_STEPS = 16  # neuron counts measured: 0, I/16, 2I/16, ..., I
REPEATS = 5


@dataclass(frozen=True)
class LatencyTable:
    """Seconds per batch of `batch_size` x `seq_length` tokens."""

    heads: list[float]          # a(n) for n = 0..H
    neuron_counts: list[int]    # the m measured
    neurons: list[float]        # f(m) at those m
    empty: float                # z: a layer with no head and no neuron
    full_model: float           # the whole model, as measured
    layers: int
    batch_size: int
    seq_length: int
    device: str

    @property
    def rest(self) -> float:
        return self.full_model - self.layers * self.layer(len(self.heads) - 1,
                                                          self.neuron_counts[-1])

    def neuron_time(self, count: int) -> float:
        """f(count), linear between the measured counts."""
        counts, times = self.neuron_counts, self.neurons
        for i in range(1, len(counts)):
            if count <= counts[i]:
                share = (count - counts[i - 1]) / max(counts[i] - counts[i - 1], 1)
                return times[i - 1] + share * (times[i] - times[i - 1])
        return times[-1]

    def layer(self, heads: int, neurons: int) -> float:
        return self.heads[heads] + self.neuron_time(neurons) - self.empty

    def predict(self, heads_per_layer: list[int], neurons_per_layer: list[int]) -> float:
        return self.rest + sum(self.layer(h, n) for h, n in zip(heads_per_layer,
                                                                neurons_per_layer, strict=True))


def _timed(fn, repeats: int = REPEATS, least_seconds: float = 0.25,
           most: int = 50) -> float:
    """Median seconds of `fn` over at least `repeats` runs and `least_seconds` (so that
    short timings see enough runs to outvote a stall), at most `most` runs."""
    fn()  # warm-up
    times: list[float] = []
    while len(times) < repeats or (sum(times) < least_seconds and len(times) < most):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_batch(model: nn.Module, batch_size: int, seq_length: int) -> dict:
    """Random token ids (above the special tokens at the start of BERT-style vocabularies),
    every position real."""
    generator = torch.Generator().manual_seed(0)
    low = min(1000, model.config.vocab_size // 2)
    ids = torch.randint(low, model.config.vocab_size, (batch_size, seq_length),
                        generator=generator).to(next(model.parameters()).device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure_model_latency(model: nn.Module, batch_size: int, seq_length: int) -> float:
    """Median seconds of a forward pass of `model` on a random batch."""
    batch = random_batch(model, batch_size, seq_length)
    with torch.inference_mode():
        return _timed(lambda: model(**batch))


def measure_speedup(full: nn.Module, variant: nn.Module, batch_size: int, seq_length: int,
                    rounds: int = REPEATS) -> tuple[float, float]:
    """(median seconds of `variant`, median seconds of `full`) of a forward pass on the same
    random batch, timed alternately in `rounds` rounds (after a warm-up of each), so that a
    change in the machine's load hits both alike and their ratio stays a fair speed-up."""
    batch = random_batch(full, batch_size, seq_length)
    calls = {"variant": lambda: variant(**batch), "full": lambda: full(**batch)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up
        for _ in range(rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - started)
    return statistics.median(times["variant"]), statistics.median(times["full"])


def _layer_call(model: nn.Module, batch: dict) -> tuple[tuple, dict]:
    """The arguments the encoder passes to its first layer for `batch`."""
    layer = distinct_layers(model)[0]
    recorded = {}

    def hook(module, args, kwargs):
        recorded["call"] = (args, dict(kwargs))

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model.base_model(**batch)
    finally:
        handle.remove()
    return recorded["call"]


def _resized_layer(layer: nn.Module, paths: dict, heads: int, head_dim: int,
                   neurons: int) -> nn.Module:
    """A copy of `layer` with its first `heads` heads and `neurons` neurons."""
    variant = copy.deepcopy(layer)
    shrink_heads(variant, paths, list(range(heads)), head_dim)
    shrink_neurons(variant, paths, list(range(neurons)))
    return variant


def measure_latency_table(model: nn.Module, batch_size: int, seq_length: int) -> LatencyTable:
    """Measure the table for `model` on its device (see the module docstring)."""
    heads, neurons = head_layout(model), neuron_layout(model)
    device = next(model.parameters()).device
    batch = random_batch(model, batch_size, seq_length)
    args, kwargs = _layer_call(model, batch)
    layer, paths = distinct_layers(model)[0], family_of(model.config).paths

    def layer_time(n: int, m: int) -> float:
        variant = _resized_layer(layer, paths, n, heads.head_dim, m)
        with torch.inference_mode():
            return _timed(lambda: variant(*args, **kwargs))

    counts = sorted({round(i * neurons.num_neurons / NEURON_STEPS)
                     for i in range(NEURON_STEPS + 1)})
    full = measure_model_latency(model, batch_size, seq_length)
    return LatencyTable(
        heads=[layer_time(n, 0) for n in range(heads.num_heads + 1)],
        neuron_counts=counts, neurons=[layer_time(0, m) for m in counts],
        empty=layer_time(0, 0), full_model=full, layers=heads.num_layers,
        batch_size=batch_size, seq_length=seq_length, device=str(device),
    )


def _cache_path(model: nn.Module, batch_size: int, seq_length: int) -> Path:
    config = model.config
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu-{torch.get_num_threads()}-threads"
    key = json.dumps([config.model_type, config.to_dict().get("hidden_size"),
                      head_layout(model).num_heads, neuron_layout(model).num_neurons,
                      head_layout(model).num_layers, batch_size, seq_length, name,
                      torch.__version__, str(next(model.parameters()).dtype)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("HEADCOUNT_CACHE", Path.home() / ".cache" / "headcount"))
    return root / "latency" / f"{digest}.json"


def latency_table(model: nn.Module, batch_size: int, seq_length: int, *,
                  refresh: bool = False) -> tuple[LatencyTable, bool]:
    """The cached table for this model shape and device, or a new measurement (then cached);
    and whether it came from the cache. Only an unpruned model is measured (its layers
    give every count)."""
    path = _cache_path(model, batch_size, seq_length)
    if path.is_file() and not refresh:
        return LatencyTable(**json.loads(path.read_text())), True
    table = measure_latency_table(model, batch_size, seq_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(table))
    return table, False


@dataclass(frozen=True)
class PiecewiseLinear:
    """Flat at `flat` up to `threshold` units, then `slope` per unit."""

    threshold: int
    flat: float
    slope: float


def fit_piecewise(counts: list[int], times: list[float]) -> PiecewiseLinear:
    """Kwon et al.'s fit of latency against units (counts ≥ 1): the threshold with the least
    squared error, flat at the mean before it, least-squares slope through it after."""
    points = [(c, t) for c, t in zip(counts, times, strict=True) if c >= 1]
    best = None
    for split in range(1, len(points) + 1):
        flat = statistics.fmean(t for _, t in points[:split])
        threshold = points[split - 1][0]
        tail = [(c - threshold, t - flat) for c, t in points[split:]]
        denominator = sum(x * x for x, _ in tail)
        slope = max(0.0, sum(x * y for x, y in tail) / denominator) if denominator else 0.0
        error = sum((t - flat) ** 2 for _, t in points[:split]) + \
            sum((y - slope * x) ** 2 for x, y in tail)
        if best is None or error < best[0]:
            best = (error, PiecewiseLinear(threshold, flat, slope))
    return best[1]


def latency_prices(table: LatencyTable) -> Prices:
    """The search's prices under a latency budget: every layer keeps the fitted thresholds
    of heads and neurons (their flat time is fixed), each further unit costs its slope."""
    heads = fit_piecewise(list(range(len(table.heads))), table.heads)
    neurons = fit_piecewise(table.neuron_counts, table.neurons)
    per_layer = heads.flat + neurons.flat - table.empty
    return Prices(head=max(heads.slope, 1e-12), neuron=max(neurons.slope, 1e-12),
                  full=table.full_model, fixed=table.rest + table.layers * per_layer,
                  base_heads=heads.threshold, base_neurons=neurons.threshold)
