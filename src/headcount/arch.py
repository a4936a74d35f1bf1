"""Where each supported architecture keeps its attention heads and feed-forward neurons.

One small adapter per model family names the modules headcount touches: the attention
output projection of every layer (its input is the concatenated per-head context, where
the gate hooks go), the query/key/value projections (for physical removal), the two
feed-forward projections (a neuron is a row of the first and a column of the second), and
the masked-LM head (so that vocabulary logits can be computed at masked positions only).
How many heads and neurons a model has, and which are left after pruning, is
`headcount.layouts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from headcount.errors import UnsupportedModelError
from headcount.resize import layer_modules, module_at


@dataclass(frozen=True)
class AttentionBlock:
    """The projections of one layer's attention: `output` is gated, the per-head projections
    (query, key, value, ...) are pruned with it (see `headcount.resize`)."""

    layer: nn.Module
    paths: dict

    @property
    def attention(self) -> nn.Module:
        """The module that owns the per-head projections (its forward returns the context
        and, with eager attention, the attention probabilities)."""
        return module_at(self.layer, self.paths["attention"])

    def _row(self, index: int) -> nn.Linear:
        return getattr(self.attention, self.paths["head_rows"][index])

    @property
    def query(self) -> nn.Linear:
        return self._row(0)

    @property
    def key(self) -> nn.Linear:
        return self._row(1)

    @property
    def value(self) -> nn.Linear:
        return self._row(2)

    @property
    def output(self) -> nn.Linear:
        return module_at(self.layer, self.paths["attention_output"])


@dataclass(frozen=True)
class FeedForward:
    """The two projections of one feed-forward block: neuron j is row j of `intermediate`
    (and its bias) and column j of `output`, whose input (the activation) is gated."""

    layer: nn.Module
    paths: dict

    @property
    def intermediate(self) -> nn.Linear:
        return module_at(self.layer, self.paths["intermediate"])

    @property
    def output(self) -> nn.Linear:
        return module_at(self.layer, self.paths["ffn_output"])


# Auto classes a pruned checkpoint maps to its family's classes (`<Prefix>Model`, ...), so that
# stock transformers loads it with whichever head it has.
AUTO_CLASSES = ("Model", "ForSequenceClassification", "ForMaskedLM", "ForTokenClassification",
                "ForQuestionAnswering", "ForMultipleChoice")


@dataclass(frozen=True)
class Family:
    """An architecture: where its modules live (`paths`, see `headcount.resize`), its
    masked-LM head, and what its inputs and layers are like."""

    name: str
    paths: dict
    # full model with an MLM head -> function mapping hidden states [n, hidden] to logits
    # [n, vocab]; None when the model class has no MLM head
    mlm_head: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor] | None]
    class_prefix: str  # transformers' classes: f"{class_prefix}ForMaskedLM", ...
    # whether the encoder's forward takes token_type_ids at all
    takes_token_types: bool = True
    # RoBERTa-style position ids start after the padding index, costing pad_token_id + 1 slots
    position_offset_from_padding: bool = False
    # ALBERT: one layer's weights applied num_hidden_layers times
    shared_layers: bool = False
    # encoder -> None, or an UnsupportedModelError for a layout the paths cannot handle
    check: Callable[[nn.Module], None] | None = None


BERT_PATHS = {
    "layers": "encoder.layer", "attention": "attention.self",
    "head_rows": ["query", "key", "value"], "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense", "ffn_output": "output.dense",
}
DISTILBERT_PATHS = {
    "layers": "transformer.layer", "attention": "attention",
    "head_rows": ["q_lin", "k_lin", "v_lin"], "attention_output": "attention.out_lin",
    "intermediate": "ffn.lin1", "ffn_output": "ffn.lin2",
}
ALBERT_PATHS = {
    "layers": "encoder.albert_layer_groups.0.albert_layers", "attention": "attention",
    "head_rows": ["query", "key", "value"], "attention_output": "attention.dense",
    "intermediate": "ffn", "ffn_output": "ffn_output",
}


def _check_albert(encoder: nn.Module) -> None:
    groups = encoder.encoder.albert_layer_groups
    if len(groups) != 1 or len(groups[0].albert_layers) != 1:
        # Every released ALBERT checkpoint has one group with one layer; others would need a
        # different notion of "layer application" and are refused rather than mis-gated.
        raise UnsupportedModelError(
            f"ALBERT with num_hidden_groups={len(groups)} and "
            f"inner_group_num={len(groups[0].albert_layers)} is not supported; "
            "only the released layout (1 group, 1 shared layer) is"
        )


def _head(attribute: str):
    """MLM head stored as one module (BERT `cls`, RoBERTa `lm_head`, ALBERT `predictions`)."""

    def find(model: nn.Module):
        return getattr(model, attribute, None)

    return find


def _electra_head(model: nn.Module):
    if not hasattr(model, "generator_lm_head"):
        return None
    return lambda h: model.generator_lm_head(model.generator_predictions(h))


def _distilbert_head(model: nn.Module):
    if not hasattr(model, "vocab_projector"):
        return None
    return lambda h: model.vocab_projector(
        model.vocab_layer_norm(model.activation(model.vocab_transform(h)))
    )


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", BERT_PATHS, _head("cls"), "Bert"),
    "roberta": Family("roberta", BERT_PATHS, _head("lm_head"), "Roberta",
                      position_offset_from_padding=True),
    "xlm-roberta": Family("xlm-roberta", BERT_PATHS, _head("lm_head"), "XLMRoberta",
                          position_offset_from_padding=True),
    "electra": Family("electra", BERT_PATHS, _electra_head, "Electra"),
    "distilbert": Family("distilbert", DISTILBERT_PATHS, _distilbert_head, "DistilBert",
                         takes_token_types=False),
    "albert": Family("albert", ALBERT_PATHS, _head("predictions"), "Albert",
                     shared_layers=True, check=_check_albert),
}

SUPPORTED = tuple(FAMILIES)


def family_of(config) -> Family:
    """The adapter for a model config; a clear error for any other architecture."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"Unsupported architecture '{model_type}'. Supported: {', '.join(SUPPORTED)}"
        )
    return FAMILIES[model_type]


def encoder_of(model: nn.Module) -> nn.Module:
    """The bare encoder inside a model with any task head (or the model itself)."""
    return model.base_model


def layer_stack(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's distinct transformer layers in call order (BERT, RoBERTa, XLM-R,
    ELECTRA: `encoder.layer`; DistilBERT: `transformer.layer`), or None for ALBERT, whose
    one shared layer (inside its layer groups) runs num_hidden_layers times."""
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
    """Whether to pass token_type_ids: not for DistilBERT, nor for a single-type vocabulary."""
    family = family_of(config)
    return family.takes_token_types and getattr(config, "type_vocab_size", 2) > 1


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Function from hidden states [n, hidden] to vocabulary logits [n, vocab], or None."""
    return family_of(model.config).mlm_head(model)
