"""Which heads and neurons to keep under a budget (Kwon et al. 2022's mask search).

Every kept head costs the same (`Prices.head`) and so does every kept neuron
(`Prices.neuron`), beyond a base of units each layer keeps anyway (`Prices.base_heads`,
`base_neurons`: none for FLOPs and parameters; the flat start of the measured latency for a
latency budget). The importance of a set of units is the sum of their Fisher diagonals.
For each number k of heads kept (beyond the base), the k most important heads are kept,
then as many of the most important neurons as the rest of the budget pays for; the k whose
set has the largest total importance wins. With uniform prices within a kind this is the
best set of all under the budget: for a given number of each kind, the most important ones
are the best choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from headcount.choices import BUDGET_KINDS, check_choice
from headcount.errors import ConfigError

Unit = tuple[int, int]  # (layer, index)


@dataclass(frozen=True)
class Budget:
    """`kind` (flops, params or latency) and the share of the full model's it allows."""

    kind: str
    fraction: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        """`flops=0.6`, `params=0.5` or `latency=0.6`, checked."""
        kind, sign, value = str(text).partition("=")
        if not sign:
            raise ConfigError(f"--budget {text!r}: give KIND=FRACTION, e.g. flops=0.6 "
                              f"(kinds: {', '.join(BUDGET_KINDS)})")
        check_choice("budget kind", kind.strip(), BUDGET_KINDS)
        try:
            fraction = float(value)
        except ValueError:
            raise ConfigError(f"--budget {text!r}: {value!r} is not a number") from None
        if not 0 < fraction <= 1 or not math.isfinite(fraction):
            raise ConfigError(f"--budget {text!r}: the fraction {fraction} is outside (0, 1]")
        return cls(kind.strip(), fraction)

    def __str__(self) -> str:
        return f"{self.kind}={self.fraction:g}"


@dataclass(frozen=True)
class Prices:
    """What units cost under one budget kind (any unit: multiply-adds, parameters, seconds).

    `full` is the cost of the model as it is, `fixed` what no unit owns (kept whatever the
    masks), `base_heads`/`base_neurons` the units every layer keeps (their cost is in
    `base`), `head`/`neuron` the cost of each further unit.
    """

    head: float
    neuron: float
    full: float
    fixed: float = 0.0
    base_heads: int = 0
    base_neurons: int = 0
    base: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    kept: dict[str, list[Unit]]  # "heads", "neurons" -> kept (layer, index), in no order
    cost: float                  # predicted, in the prices' unit
    importance: float            # sum of the kept units' Fisher diagonals


def _ranked(scores: torch.Tensor, present: list[list[int]], base: int
            ) -> tuple[list[Unit], list[tuple[float, Unit]]]:
    """(each layer's `base` most important units, the rest sorted by importance)."""
    forced, rest = [], []
    for layer, units in enumerate(present):
        ordered = sorted(units, key=lambda u: (-float(scores[layer, u]), u))
        forced += [(layer, u) for u in ordered[:base]]
        rest += [(float(scores[layer, u]), (layer, u)) for u in ordered[base:]]
    rest.sort(key=lambda item: (-item[0], item[1]))
    return forced, rest


def _prefix(values: list[tuple[float, Unit]]) -> list[float]:
    sums = [0.0]
    for value, _ in values:
        sums.append(sums[-1] + value)
    return sums


def search_masks(diagonal: dict[str, torch.Tensor], present: dict[str, list[list[int]]],
                 prices: Prices, fraction: float) -> SearchResult:
    """The heads and neurons to keep so that the predicted cost is at most `fraction` of
    `prices.full`, with the largest total Fisher diagonal. `present` lists, per layer, the
    units the model still has (a pruned checkpoint's absent units are not candidates).

    Example:
        >>> result = search_masks(fisher.diagonal, present, flops_prices(model, 128), 0.6)
        >>> result.cost <= 0.6 * flops_prices(model, 128).full
        True
    """
    heads_forced, heads = _ranked(diagonal["heads"], present["heads"], prices.base_heads)
    neurons_forced, neurons = _ranked(diagonal["neurons"], present["neurons"],
                                      prices.base_neurons)
    allowed = fraction * prices.full - prices.fixed - prices.base
    if allowed < 0:
        raise ConfigError(
            f"a budget of {fraction:g} is below the smallest model this cost model allows "
            f"({(prices.fixed + prices.base) / prices.full:.3f} of the full one)")
    head_sums, neuron_sums = _prefix(heads), _prefix(neurons)
    best = None
    for k in range(len(heads) + 1):
        left = allowed - k * prices.head
        if left < 0:
            break
        n = min(len(neurons), math.floor(left / prices.neuron + 1e-9))
        while n > 0 and k * prices.head + n * prices.neuron > allowed:
            n -= 1  # floating-point guard: never over the budget
        total = head_sums[k] + neuron_sums[n]
        if best is None or total > best[0]:
            best = (total, k, n)
    total, k, n = best
    kept = {"heads": heads_forced + [unit for _, unit in heads[:k]],
            "neurons": neurons_forced + [unit for _, unit in neurons[:n]]}
    base_importance = sum(float(diagonal["heads"][u]) for u in heads_forced) + \
        sum(float(diagonal["neurons"][u]) for u in neurons_forced)
    cost = prices.fixed + prices.base + k * prices.head + n * prices.neuron
    return SearchResult(kept, cost, total + base_importance)
