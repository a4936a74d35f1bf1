"""What a study's units cost, roughly: their examples, tokens and forward passes, the
encoder's multiply-adds per token, and the speed of the device (for `study --plan`).

A unit's time is its size in forward passes over its examples (a backward pass counts as
two), times the encoder's multiply-adds per token (2·L·(4d² + 2·d·ff) + 4·L·T·d), at the
speed of a short dense matrix product on the study's device scaled by `EFFICIENCY`, plus
`UNIT_OVERHEAD_S` for loading and saving. Rough: within about a factor of two.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from headcount.study.config import StudyConfig

# Share of a dense matrix product's speed that whole units reach (attention, padding,
# tokenising, optimizer steps), and the seconds each unit spends loading and saving; set
# from the units' times of examples/glue-local.toml on 2 CPU cores (see the README).
EFFICIENCY = 1.0
UNIT_OVERHEAD_S = 4.0
WORD_TOKENS = 1.3       # word pieces per whitespace word, roughly, for English text
BYTES_PER_TOKEN = 4.5   # of raw English text, for the masked-LM text's size


@dataclass(frozen=True)
class Split:
    """How many examples a split has and how long they are (tokens, capped)."""

    count: int
    tokens: float


def split_of(examples: list, max_length: int) -> Split:
    """The size of a downstream split: its examples and their mean length in tokens (from
    words, capped at max_length)."""
    words = [len(e.text.split()) + len((e.text_pair or "").split()) for e in examples[:2000]]
    mean = WORD_TOKENS * sum(words) / max(len(words), 1) + 3
    return Split(len(examples), min(float(max_length), mean))


def text_blocks(config: StudyConfig) -> Split:
    """The masked-LM text in blocks of max_length tokens (from its size in bytes)."""
    path = Path(config.pretrain.text.removeprefix("mlm:"))
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    length = config.pretrain.max_length
    return Split(max(1, math.ceil(size / BYTES_PER_TOKEN / length)), float(length))


def subset(count: int, fraction: float | None, max_examples: int | None) -> int:
    """How many examples `choose_subset` keeps (it samples `fraction`, then caps)."""
    if fraction is not None and fraction < 1:
        count = round(fraction * count)
    return count if max_examples is None else min(count, max_examples)


def flops_per_token(config, tokens: float) -> float:
    """Multiply-adds x 2 of one encoder forward pass per token, at `tokens` per example."""
    d = config.hidden_size
    layers = config.num_hidden_layers
    ff = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", 4 * d)
    return 2 * layers * (4 * d * d + 2 * d * ff) + 4 * layers * tokens * d


def device_speed(device: str) -> tuple[float, str]:
    """(flop/s of a dense matrix product the size of a small encoder's, on `device`; its
    name), measured for a quarter of a second."""
    import torch

    from headcount.models import resolve_device

    target = resolve_device(device)
    a = torch.randn(512, 384, device=target)
    b = torch.randn(384, 1536, device=target)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.25:
        a @ b
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        count += 1
    seconds = time.perf_counter() - started
    return count * 2 * 512 * 384 * 1536 / seconds, str(target)


def times(*values) -> float | None:
    """The product of `values`, None if any is unknown."""
    product = 1.0
    for value in values:
        if value is None:
            return None
        product *= value
    return product


def unit_seconds(model_config, passes: float | None, tokens: float | None,
                 speed: float) -> float | None:
    """A rough time for a unit of `passes` forward passes over examples of `tokens` tokens
    at `speed` flop/s of dense products; None if a size is unknown."""
    if model_config is None or passes is None or tokens is None:
        return None
    work = passes * tokens * flops_per_token(model_config, tokens)
    return UNIT_OVERHEAD_S + work / (speed * EFFICIENCY)


def duration_text(seconds: float) -> str:
    """A time as --plan shows it: ~N s, ~N min or ~N.N h."""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
