"""Where each supported architecture keeps its attention heads and feed-forward neurons.

One small adapter per model family (`headcount.families.Family`) names the modules
headcount touches: the attention output projection of every layer (its input is the
concatenated per-head context, where the gate hooks go), the per-head projections (for
physical removal), the two feed-forward projections (a neuron is a row of the first and a
column of the second), and the masked-LM head (so that vocabulary logits can be computed at
masked positions only). This module holds the registry of adapters, which users extend
with `register_family`; a `model_type` nobody registered is recognised by its structure
when its layers have BERT's layout. How many heads and neurons a model has, and which are
left after pruning, is `headcount.layouts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from headcount.errors import ConfigError, UnsupportedModelError
from headcount.families import BUILT_IN, Family, bert_layout_family, check_family
from headcount.resize import head_tensors, layer_modules, module_at


@dataclass(frozen=True)
class AttentionBlock:
    """The projections of one layer's attention: `output` is gated, the per-head tensors
    (query, key, value, ... rows; see `headcount.resize`) are pruned with it."""

    layer: nn.Module
    paths: dict

    @property
    def attention(self) -> nn.Module:
        """The module that owns the per-head projections (its forward returns the context
        and, with eager attention, the attention probabilities)."""
        return module_at(self.layer, self.paths["attention"])

    @property
    def output(self) -> nn.Linear:
        return module_at(self.layer, self.paths["attention_output"])

    def per_head(self) -> list[tuple[nn.Linear | nn.Parameter, int, int]]:
        """(tensor, parts, width in head sizes) of each per-head projection (its output
        rows) or 1-D parameter: `parts` consecutive blocks of `width * d_head` rows per
        head (BERT's query: 1, 1; ModernBERT's Wqkv: 3, 1; DeBERTa's in_proj: 1, 3)."""
        attention = self.attention
        return [(getattr(attention, name), parts, width)
                for name, parts, width in head_tensors(attention, self.paths)]

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter removed with the heads: the per-head tensors and the output
        projection (whose bias no head owns)."""
        found = [p for tensor, _, _ in self.per_head()
                 for p in ([tensor] if isinstance(tensor, nn.Parameter)
                           else tensor.parameters())]
        return found + list(self.output.parameters())

    def head_weight_squares(self, heads: int, head_dim: int) -> torch.Tensor:
        """Per head present, the sum of squares of its weights: its rows of every per-head
        projection and its columns of the output projection (biases excluded), float64."""
        squares = torch.zeros(heads, dtype=torch.float64)
        for tensor, parts, width in self.per_head():
            if isinstance(tensor, nn.Linear):
                rows = tensor.weight.detach().to("cpu", torch.float64)
                per_head = rows.view(parts, heads, width * head_dim, -1)
                squares += per_head.pow(2).sum(dim=(0, 2, 3))
        columns = self.output.weight.detach().to("cpu", torch.float64)  # [out, heads * d]
        return squares + columns.view(columns.shape[0], heads, head_dim).pow(2).sum(dim=(0, 2))


@dataclass(frozen=True)
class FeedForward:
    """The two projections of one feed-forward block: neuron j is row j of `intermediate`
    (rows j and I + j of a gated one) and column j of `output`, whose input (the
    activation) is gated."""

    layer: nn.Module
    paths: dict

    @property
    def intermediate(self) -> nn.Linear:
        return module_at(self.layer, self.paths["intermediate"])

    @property
    def output(self) -> nn.Linear:
        return module_at(self.layer, self.paths["ffn_output"])

    @property
    def rows_per_neuron(self) -> int:
        """Rows of the intermediate projection per neuron: 2 for a gated feed-forward."""
        return 2 if self.paths.get("gated_ffn") else 1


# Auto classes a pruned checkpoint maps to its family's classes (`<Prefix>Model`, ...), so that
# stock transformers loads it with whichever head it has.
AUTO_CLASSES = ("Model", "ForSequenceClassification", "ForMaskedLM", "ForTokenClassification",
                "ForQuestionAnswering", "ForMultipleChoice")

FAMILIES: dict[str, Family] = {family.name: family for family in BUILT_IN}
SUPPORTED = tuple(FAMILIES)  # the built-in families; `supported_families()` adds the user's
# model_type -> adapter recognised by structure (or the reason it was not), per config class
_RECOGNISED: dict[tuple[str, type], Family | UnsupportedModelError] = {}
BERT_LAYOUT = ("encoder.layer[i] with attention.self.{query,key,value}, "
               "attention.output.dense, intermediate.dense and output.dense")


def supported_families() -> tuple[str, ...]:
    """The model types with an adapter: the built-in ones and those registered since."""
    return tuple(FAMILIES)


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make headcount handle `family.name` (a config's `model_type`) with `family`'s adapter:
    gates, importance, removal, pruned checkpoints and every estimator then work on it.
    A name already registered is refused unless `replace`; a registered adapter takes
    precedence over recognition by structure.

    Example (a model whose layers keep BERT's modules under other names):
        >>> from headcount.arch import Family, register_family
        >>> from headcount.families import module_head
        >>> register_family(Family(
        ...     "my-encoder",
        ...     {"layers": "blocks", "attention": "attn", "head_rows": ["q", "k", "v"],
        ...      "attention_output": "attn.out", "intermediate": "mlp.up",
        ...      "ffn_output": "mlp.down"},
        ...     mlm_head=module_head("lm_head"), class_prefix="MyEncoder",
        ...     takes_token_types=False))
    """
    check_family(family)
    if family.name in FAMILIES and not replace:
        raise ConfigError(f"a family named '{family.name}' is registered already; pass "
                          "replace=True to replace its adapter")
    FAMILIES[family.name] = family
    _RECOGNISED.clear()
    return family


def unregister_family(name: str) -> None:
    """Remove the adapter registered for `name` (a built-in one too); checkpoints of that
    model_type are then recognised by structure, or refused."""
    if name not in FAMILIES:
        raise ConfigError(f"no family named '{name}' is registered; registered: "
                          f"{', '.join(supported_families())}")
    del FAMILIES[name]
    _RECOGNISED.clear()


def _recognised(config) -> Family:
    key = (config.model_type, type(config))
    if key not in _RECOGNISED:
        try:
            _RECOGNISED[key] = bert_layout_family(config)
        except UnsupportedModelError as reason:
            _RECOGNISED[key] = reason
    found = _RECOGNISED[key]
    if isinstance(found, UnsupportedModelError):
        raise UnsupportedModelError(
            f"Unsupported architecture '{config.model_type}'. Supported: "
            f"{', '.join(supported_families())}, and any encoder whose layers have BERT's "
            f"layout ({BERT_LAYOUT}); not this one: {found}"
        )
    return found


def family_of(config) -> Family:
    """The adapter for a model config: the registered one for its model_type, else one
    recognised from the structure of its layers (BERT's layout); a clear error for any
    other architecture, listing the supported families and what was looked for."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if not isinstance(model_type, str) or not model_type:
        raise UnsupportedModelError(
            f"Unsupported architecture {model_type!r}: the config names no model_type. "
            f"Supported: {', '.join(supported_families())}")
    return _recognised(config)


def encoder_of(model: nn.Module) -> nn.Module:
    """The bare encoder inside a model with any task head (or the model itself)."""
    return model.base_model


def layer_stack(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's distinct transformer layers in call order (`encoder.layer`,
    DistilBERT's `transformer.layer`, ModernBERT's `layers`, ...), or None for ALBERT,
    whose one shared layer (inside its layer groups) runs num_hidden_layers times."""
    family = family_of(model.config)
    if family.shared_layers:
        return None
    return module_at(encoder_of(model), family.paths["layers"])


def distinct_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder's distinct layers (one for ALBERT), checked against the family's layout."""
    family = family_of(model.config)
    encoder = encoder_of(model)
    if family.check is not None:
        family.check(encoder)
    return layer_modules(encoder, family.paths)


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    paths = family_of(model.config).paths
    return [AttentionBlock(layer, paths) for layer in distinct_layers(model)]


def feed_forwards(model: nn.Module) -> list[FeedForward]:
    """One FeedForward per distinct layer (one for ALBERT's shared layer)."""
    paths = family_of(model.config).paths
    return [FeedForward(layer, paths) for layer in distinct_layers(model)]


def max_positions(config) -> int:
    """The longest input (in tokens, special tokens included) the position table allows."""
    family = family_of(config)
    limit = config.max_position_embeddings
    if family.position_offset_from_padding:
        limit -= config.pad_token_id + 1
    return limit


def takes_token_types(config) -> bool:
    """Whether to pass token_type_ids: not for families without them (DistilBERT,
    ModernBERT, MPNet), nor for a single-type vocabulary (RoBERTa, DeBERTa-v3)."""
    family = family_of(config)
    return family.takes_token_types and getattr(config, "type_vocab_size", 2) > 1


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Function from hidden states [n, hidden] to vocabulary logits [n, vocab], or None."""
    return family_of(model.config).mlm_head(model)
