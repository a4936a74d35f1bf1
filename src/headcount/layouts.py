"""How many heads and feed-forward neurons a model has, and which remain after pruning.

Gates, scores and masks index units by their original position, also in a physically
pruned model: `kept` lists, per distinct layer (one row for ALBERT, whose one layer runs
num_hidden_layers times), the original indices of the units still present. A pruned
checkpoint records them in its config (`headcount_kept_heads`, `headcount_kept_neurons`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from headcount.arch import distinct_layers, family_of
from headcount.errors import ConfigError
from headcount.resize import KEPT_HEADS_KEY, KEPT_NEURONS_KEY

UNIT_KINDS = ("heads", "neurons")


@dataclass(frozen=True)
class UnitLayout:
    """Units of one kind (heads or neurons) per layer, and which are present.

    `num_layers` counts layer applications: for ALBERT that is num_hidden_layers, although
    only one set of weights exists (`shared_layers`). `num_units` is the original number per
    layer. `kept` lists, per distinct layer, the original indices still present.
    """

    family: str
    num_layers: int
    num_units: int
    shared_layers: bool
    kept: tuple[tuple[int, ...], ...]

    @property
    def num_distinct_layers(self) -> int:
        """Rows of a score table: 1 for ALBERT's shared units, else num_layers."""
        return 1 if self.shared_layers else self.num_layers

    @property
    def total_units(self) -> int:
        """Units that exist in the original model (ALBERT: its shared ones)."""
        return self.num_distinct_layers * self.num_units

    @property
    def units_remaining(self) -> int:
        return sum(len(units) for units in self.kept)

    def kept_in_application(self, layer: int) -> tuple[int, ...]:
        """Units present when layer application `layer` runs."""
        return self.kept[0 if self.shared_layers else layer]

    def absent(self) -> list[tuple[int, int]]:
        """(layer, unit) of the units a pruned checkpoint no longer has."""
        return [(layer, unit) for layer, kept in enumerate(self.kept)
                for unit in sorted(set(range(self.num_units)) - set(kept))]

    def resolve_shared(self, shared: bool | None) -> bool:
        """Whether scores are one per shared unit: the default (None) is True exactly for
        models whose layers share weights (ALBERT); True for any other is an error."""
        if shared is None:
            return self.shared_layers
        if shared and not self.shared_layers:
            raise ConfigError(
                f"shared=True needs a model whose layers share weights (ALBERT); "
                f"'{self.family}' has {self.num_layers} distinct layers"
            )
        return shared

    def score_rows(self, shared: bool) -> int:
        """Rows of a score table: one for shared units, else one per layer application."""
        return 1 if shared else self.num_layers


@dataclass(frozen=True)
class HeadLayout(UnitLayout):
    """The attention heads: `num_heads` (= num_units) per layer of `head_dim` each."""

    head_dim: int = 0

    @property
    def num_heads(self) -> int:
        return self.num_units

    @property
    def total_heads(self) -> int:
        return self.total_units

    @property
    def heads_remaining(self) -> int:
        return self.units_remaining


@dataclass(frozen=True)
class NeuronLayout(UnitLayout):
    """The feed-forward neurons: `num_units` = the intermediate size of the original model."""

    @property
    def num_neurons(self) -> int:
        return self.num_units

    @property
    def neurons_remaining(self) -> int:
        return self.units_remaining


def _kept(config, key: str, distinct: int, count: int) -> tuple[tuple[int, ...], ...]:
    kept = getattr(config, key, None)
    if kept is None:
        kept = [range(count)] * distinct
    return tuple(tuple(int(unit) for unit in units) for units in kept)


def _sizes(model: nn.Module) -> tuple:
    config = model.config
    family = family_of(config)
    distinct_layers(model)  # refuses layouts the adapters cannot handle
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    distinct = 1 if family.shared_layers else num_layers
    return family, config, num_layers, distinct


def head_layout(model: nn.Module) -> HeadLayout:
    family, config, num_layers, distinct = _sizes(model)
    num_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    hidden = getattr(config, "hidden_size", None) or config.dim
    return HeadLayout(family.name, num_layers, num_heads, family.shared_layers,
                      _kept(config, KEPT_HEADS_KEY, distinct, num_heads),
                      head_dim=hidden // num_heads)


def intermediate_size(config) -> int:
    """Feed-forward neurons per layer of the original model."""
    return getattr(config, "intermediate_size", None) or config.hidden_dim  # DistilBERT


def neuron_layout(model: nn.Module) -> NeuronLayout:
    family, config, num_layers, distinct = _sizes(model)
    size = intermediate_size(config)
    return NeuronLayout(family.name, num_layers, size, family.shared_layers,
                        _kept(config, KEPT_NEURONS_KEY, distinct, size))


def unit_layout(model: nn.Module, units: str) -> UnitLayout:
    """`head_layout` or `neuron_layout`, by unit kind."""
    return head_layout(model) if units == "heads" else neuron_layout(model)


def architecture_signature(model: nn.Module) -> dict:
    """What scores must agree with to be applied to a model: family, head and neuron grid."""
    layout = head_layout(model)
    config = model.config
    return {
        "family": layout.family,
        "layers": layout.num_distinct_layers,
        "heads": layout.num_heads,
        "neurons": intermediate_size(config),
        "hidden_size": getattr(config, "hidden_size", None) or config.dim,
        "layer_applications": layout.num_layers,
    }
