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


@dataclass(frozen=True)
class AttentionBlock:
    """The projections of one attention block; `output` is gated, q/k/v are pruned with it.

    `attention` owns the query/key/value projections (BERT: `attention.self`), `output_owner`
    owns the output projection; `names` are their attribute names, so that physical removal
    can put smaller layers in their place.
    """

    attention: nn.Module
    output_owner: nn.Module
    names: tuple[str, str, str, str]  # query, key, value, output
    # (parent module, attribute) of `attention`, to swap it for a stand-in when every head
    # of the layer is removed
    slot: tuple[nn.Module, str]

    @property
    def query(self) -> nn.Linear:
        return getattr(self.attention, self.names[0])

    @property
    def key(self) -> nn.Linear:
        return getattr(self.attention, self.names[1])

    @property
    def value(self) -> nn.Linear:
        return getattr(self.attention, self.names[2])

    @property
    def output(self) -> nn.Linear:
        return getattr(self.output_owner, self.names[3])


@dataclass(frozen=True)
class FeedForward:
    """The two projections of one feed-forward block: neuron j is row j of `intermediate`
    (and its bias) and column j of `output`, whose input (the activation) is gated."""

    intermediate_owner: nn.Module
    output_owner: nn.Module
    names: tuple[str, str]  # intermediate, output

    @property
    def intermediate(self) -> nn.Linear:
        return getattr(self.intermediate_owner, self.names[0])

    @property
    def output(self) -> nn.Linear:
        return getattr(self.output_owner, self.names[1])


@dataclass(frozen=True)
class Family:
    name: str
    # encoder (the model's base model) -> one AttentionBlock per distinct set of weights
    blocks: Callable[[nn.Module], list[AttentionBlock]]
    # full model with an MLM head -> function mapping hidden states [n, hidden] to logits
    # [n, vocab]; None when the model class has no MLM head
    mlm_head: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor] | None]
    # encoder -> one FeedForward per distinct set of weights
    feed_forwards: Callable[[nn.Module], list[FeedForward]] = None
    # whether the encoder's forward takes token_type_ids at all
    takes_token_types: bool = True
    # RoBERTa-style position ids start after the padding index, costing pad_token_id + 1 slots
    position_offset_from_padding: bool = False
    # ALBERT: one layer's weights applied num_hidden_layers times
    shared_layers: bool = False


def _bert_like_blocks(encoder: nn.Module) -> list[AttentionBlock]:
    return [
        AttentionBlock(
            layer.attention.self, layer.attention.output, ("query", "key", "value", "dense"),
            (layer.attention, "self"),
        )
        for layer in encoder.encoder.layer
    ]


def _bert_like_feed_forwards(encoder: nn.Module) -> list[FeedForward]:
    return [FeedForward(layer.intermediate, layer.output, ("dense", "dense"))
            for layer in encoder.encoder.layer]


def _distilbert_feed_forwards(encoder: nn.Module) -> list[FeedForward]:
    return [FeedForward(layer.ffn, layer.ffn, ("lin1", "lin2"))
            for layer in encoder.transformer.layer]


def _albert_feed_forwards(encoder: nn.Module) -> list[FeedForward]:
    _albert_blocks(encoder)  # refuses layouts other than one group with one layer
    layer = encoder.encoder.albert_layer_groups[0].albert_layers[0]
    return [FeedForward(layer, layer, ("ffn", "ffn_output"))]


def _distilbert_blocks(encoder: nn.Module) -> list[AttentionBlock]:
    # DistilBERT's attention module holds its output projection too.
    return [
        AttentionBlock(
            layer.attention, layer.attention, ("q_lin", "k_lin", "v_lin", "out_lin"),
            (layer, "attention"),
        )
        for layer in encoder.transformer.layer
    ]


def _albert_blocks(encoder: nn.Module) -> list[AttentionBlock]:
    groups = encoder.encoder.albert_layer_groups
    if len(groups) != 1 or len(groups[0].albert_layers) != 1:
        # Every released ALBERT checkpoint has one group with one layer; others would need a
        # different notion of "layer application" and are refused rather than mis-gated.
        raise UnsupportedModelError(
            f"ALBERT with num_hidden_groups={len(groups)} and "
            f"inner_group_num={len(groups[0].albert_layers)} is not supported; "
            "only the released layout (1 group, 1 shared layer) is"
        )
    layer = groups[0].albert_layers[0]
    return [
        AttentionBlock(
            layer.attention, layer.attention, ("query", "key", "value", "dense"),
            (layer, "attention"),
        )
    ]


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
    "bert": Family("bert", _bert_like_blocks, _head("cls"), _bert_like_feed_forwards),
    "roberta": Family("roberta", _bert_like_blocks, _head("lm_head"), _bert_like_feed_forwards,
                      position_offset_from_padding=True),
    "xlm-roberta": Family("xlm-roberta", _bert_like_blocks, _head("lm_head"),
                          _bert_like_feed_forwards, position_offset_from_padding=True),
    "electra": Family("electra", _bert_like_blocks, _electra_head, _bert_like_feed_forwards),
    "distilbert": Family("distilbert", _distilbert_blocks, _distilbert_head,
                         _distilbert_feed_forwards, takes_token_types=False),
    "albert": Family("albert", _albert_blocks, _head("predictions"), _albert_feed_forwards,
                     shared_layers=True),
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
    encoder = encoder_of(model)
    return encoder.transformer.layer if family.name == "distilbert" else encoder.encoder.layer


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    return family_of(model.config).blocks(encoder_of(model))


def feed_forwards(model: nn.Module) -> list[FeedForward]:
    """One FeedForward per distinct layer (one for ALBERT's shared layer)."""
    return family_of(model.config).feed_forwards(encoder_of(model))


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
