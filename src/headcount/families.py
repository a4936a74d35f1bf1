"""The architecture adapters: where each family keeps its heads and neurons, declared as data.

A `Family` names, for one `model_type`, the modules headcount touches (`paths`, the plain
dict `headcount.resize` reads: which projections are per head, which feed-forward rows are
per neuron), the masked-LM head, and what its inputs and layers are like. The built-in
adapters are below; `headcount.arch` holds the registry (`register_family` adds a user's
own), and recognises any other encoder whose layers have BERT's layout by its structure
(`bert_layout_family`).

How the families differ from BERT, and what their adapters say about it:

- DeBERTa-v2/v3 (`deberta-v2`): separate `query_proj/key_proj/value_proj`; the relative
  position projections `pos_key_proj`/`pos_query_proj` have rows per head and go with them
  (with `share_att_key`, v3's default, the key/query projections serve both and there is
  nothing more to slice). DeBERTa (`deberta`): one `in_proj` with q, k and v rows per head
  interleaved, and per-head `q_bias`/`v_bias` vectors; `talking_head` checkpoints mix the
  heads' scores and are refused.
- ModernBERT: one fused `Wqkv` ([q | k | v]) and `Wo` in `attn`; a gated feed-forward `Wi`
  ([input | gate], 2 x intermediate rows) whose rows j and I + j go with neuron j; no token
  types. Its local (sliding-window) and global layers differ in their mask only.
- MPNet: `attention.attn.{q,k,v,o}`; the relative-position bias has one column per head in
  a table shared by all layers, so a pruned layer selects its own heads' part of the bias.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from headcount.errors import UnsupportedModelError
from headcount.resize import OPTIONAL_PATHS, REQUIRED_PATHS, module_at


@dataclass(frozen=True)
class Family:
    """An architecture: where its modules live (`paths`, see `headcount.resize`), its
    masked-LM head, and what its inputs and layers are like."""

    name: str  # the config's model_type
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
    # For mask tuning: (path from a layer to a module, argument position) whose input is the
    # residual stream the feed-forward adds to; None: the intermediate projection's input
    # (post-LayerNorm layers). Pre-LayerNorm layers normalise it first (ModernBERT's
    # `mlp_norm`); BERT-layout layers pass it to their `output` module as argument 1.
    ffn_residual: tuple[str, int] | None = None


def module_head(*attributes: str):
    """An MLM head stored as one module under the first of `attributes` the model has (BERT
    `cls`, RoBERTa and MPNet `lm_head`, ALBERT `predictions`)."""

    def find(model: nn.Module):
        for attribute in attributes:
            head = getattr(model, attribute, None)
            if isinstance(head, nn.Module):
                return head
        return None

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


def _deberta_head(model: nn.Module):
    """DeBERTa's legacy head (`cls`) or the current one, which takes the word embeddings."""
    if isinstance(getattr(model, "cls", None), nn.Module):
        return model.cls
    if not hasattr(model, "lm_predictions"):
        return None
    return lambda h: model.lm_predictions(h, model.get_input_embeddings())


def _modernbert_head(model: nn.Module):
    if not (hasattr(model, "head") and hasattr(model, "decoder")):
        return None
    return lambda h: model.decoder(model.head(h))


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


def _check_deberta(encoder: nn.Module) -> None:
    if getattr(encoder.config, "talking_head", False):
        # Its head_logits_proj/head_weights_proj mix every head's scores into every other:
        # a head's context cannot be removed without changing the others'.
        raise UnsupportedModelError(
            "DeBERTa with talking_head=True is not supported: its heads mix their attention "
            "scores, so one head cannot be gated or removed alone"
        )


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
DEBERTA_V2_PATHS = {
    **BERT_PATHS,
    "head_rows": ["query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"],
}
DEBERTA_PATHS = {
    **BERT_PATHS, "head_rows": ["pos_proj", "pos_q_proj"], "interleaved_qkv": "in_proj",
    "head_vectors": ["q_bias", "v_bias"],
}
MODERNBERT_PATHS = {
    "layers": "layers", "attention": "attn", "head_rows": [], "fused_qkv": "Wqkv",
    "attention_output": "attn.Wo", "intermediate": "mlp.Wi", "ffn_output": "mlp.Wo",
    "gated_ffn": True,
}
MPNET_PATHS = {
    **BERT_PATHS, "attention": "attention.attn", "head_rows": ["q", "k", "v"],
    "attention_output": "attention.attn.o", "head_bias_argument": "position_bias",
}

BUILT_IN: tuple[Family, ...] = (
    Family("bert", BERT_PATHS, module_head("cls"), "Bert"),
    Family("roberta", BERT_PATHS, module_head("lm_head"), "Roberta",
           position_offset_from_padding=True),
    Family("xlm-roberta", BERT_PATHS, module_head("lm_head"), "XLMRoberta",
           position_offset_from_padding=True),
    Family("electra", BERT_PATHS, _electra_head, "Electra"),
    Family("distilbert", DISTILBERT_PATHS, _distilbert_head, "DistilBert",
           takes_token_types=False),
    Family("albert", ALBERT_PATHS, module_head("predictions"), "Albert",
           shared_layers=True, check=_check_albert),
    Family("deberta", DEBERTA_PATHS, _deberta_head, "Deberta", check=_check_deberta),
    Family("deberta-v2", DEBERTA_V2_PATHS, _deberta_head, "DebertaV2"),
    Family("modernbert", MODERNBERT_PATHS, _modernbert_head, "ModernBert",
           takes_token_types=False, ffn_residual=("mlp_norm", 0)),
    Family("mpnet", MPNET_PATHS, module_head("lm_head"), "MPNet", takes_token_types=False,
           position_offset_from_padding=True),
)


def check_family(family: Family) -> None:
    """A user's adapter, checked before it is registered: its paths must be the plain dict
    `headcount.resize` reads (they are written into pruned checkpoints as a literal)."""
    problems = []
    if not isinstance(family.name, str) or not family.name:
        problems.append(f"name {family.name!r} must be a config's model_type")
    paths = family.paths if isinstance(family.paths, dict) else {}
    missing = [key for key in REQUIRED_PATHS if key not in paths]
    unknown = sorted(set(paths) - set(REQUIRED_PATHS) - set(OPTIONAL_PATHS))
    if missing:
        problems.append(f"paths lacks {', '.join(missing)}")
    if unknown:
        problems.append(f"paths has unknown keys {', '.join(unknown)} (allowed: "
                        f"{', '.join(REQUIRED_PATHS + OPTIONAL_PATHS)})")
    for key in ("head_rows", "head_vectors"):
        value = paths.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"paths[{key!r}] must be a list of names, not {value!r}")
    for key in set(REQUIRED_PATHS + OPTIONAL_PATHS) - {"head_rows", "head_vectors",
                                                        "gated_ffn"}:
        if key in paths and not isinstance(paths[key], str):
            problems.append(f"paths[{key!r}] must be a dotted module path, not "
                            f"{paths[key]!r}")
    if not isinstance(paths.get("gated_ffn", False), bool):
        problems.append("paths['gated_ffn'] must be true or false")
    if not callable(family.mlm_head):
        problems.append("mlm_head must be a function of the model")
    if problems:
        raise UnsupportedModelError(f"family adapter {family.name!r}: " + "; ".join(problems))


# --------------------------------------------------------------------- BERT's layout


def _bare_model(config) -> nn.Module:
    """The config's bare transformers model, built on the meta device (no memory, no
    weights): only its structure is read."""
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(config)


def _bert_layout_problem(base: nn.Module, config) -> str | None:
    """Why `base` does not have BERT's layer layout, or None when it does."""
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or \
            len(layers) != getattr(config, "num_hidden_layers", None):
        return f"{type(base).__name__} has no encoder.layer list"
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    inner = getattr(config, "intermediate_size", None)
    if not all(isinstance(v, int) and v > 0 for v in (heads, hidden, inner)):
        return "its config lacks num_attention_heads, hidden_size or intermediate_size"
    for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense"):
        try:
            module = module_at(layers[0], name)
        except (AttributeError, IndexError, TypeError):
            module = None
        if not isinstance(module, nn.Linear):
            return f"its layers have no Linear {name}"
    inside = {id(module) for layer in layers for module in layer.modules()}
    outside = [name for name, module in base.named_modules() if id(module) not in inside
               and all(isinstance(getattr(module, part, None), nn.Linear)
                       for part in ("query", "key", "value"))]
    if outside:  # heads that no gate would reach (Canine's character encoders)
        return f"it has attention outside encoder.layer ({outside[0]})"
    attention = layers[0].attention.self
    extra = sorted(name for name, _ in attention.named_parameters()
                   if name.split(".")[0] not in ("query", "key", "value", "distance_embedding"))
    if extra:
        # Anything else in the self-attention may be per head (a convolution over heads,
        # talking heads, ...) and would not be sliced with them.
        return f"its self-attention has other parameters ({', '.join(extra[:3])})"
    width = heads * (hidden // heads)
    shapes = (attention.query.out_features, layers[0].attention.output.dense.in_features,
              layers[0].intermediate.dense.out_features, layers[0].output.dense.in_features)
    if shapes != (width, width, inner, inner):
        return (f"its projections' sizes {shapes} are not the config's "
                f"({width}, {width}, {inner}, {inner})")
    return None


def bert_layout_family(config) -> Family:
    """An adapter for a `model_type` not registered whose layers have BERT's layout
    (`encoder.layer[i].attention.self.{query,key,value}`, `attention.output.dense`,
    `intermediate.dense`, `output.dense`), recognised from the structure of its
    transformers model (CamemBERT, XLM-RoBERTa-XL, RoBERTa-PreLayerNorm, ERNIE,
    Megatron-BERT, RoFormer, Data2Vec-text, ...); UnsupportedModelError saying what was
    missing otherwise."""
    try:
        base = _bare_model(config)
    except Exception as error:  # noqa: BLE001 - any failure to build means "not recognised"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnsupportedModelError(f"transformers cannot build it ({first})") from None
    problem = _bert_layout_problem(base, config)
    if problem is not None:
        raise UnsupportedModelError(problem)
    name = type(base).__name__
    embeddings = getattr(base, "embeddings", None)
    return Family(
        config.model_type, dict(BERT_PATHS), module_head("cls", "lm_head"),
        name[:-len("Model")] if name.endswith("Model") else name,
        takes_token_types="token_type_ids" in inspect.signature(base.forward).parameters,
        position_offset_from_padding=getattr(embeddings, "padding_idx", None) is not None,
        # pre- or post-LayerNorm alike, the layer passes the residual stream to `output`
        ffn_residual=("output", 1),
    )
