"""The family registry: built-in adapters, BERT-layout encoders recognised by structure, a
user's own adapter, and the one-line error for anything else."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import BERT_SHAPE, COMMON, make_config, make_model, random_batch
from torch.testing import assert_close
from transformers import AutoConfig, AutoModelForSequenceClassification, GPT2Config

from headcount.arch import FAMILIES as REGISTERED
from headcount.arch import (
    Family,
    family_of,
    register_family,
    supported_families,
    unregister_family,
)
from headcount.errors import ConfigError, UnsupportedModelError
from headcount.families import BERT_PATHS, module_head
from headcount.gates import gate_heads, gate_neurons
from headcount.layouts import head_layout, neuron_layout
from headcount.removal import remove_units

# Encoders of other model types whose layers have BERT's layout (pre- or post-LayerNorm,
# absolute, RoBERTa-style or rotary positions): none is registered, all are recognised.
BERT_LAYOUT_TYPES = ("camembert", "roberta-prelayernorm", "ernie", "megatron-bert",
                     "data2vec-text", "xlm-roberta-xl", "roformer", "esm")


def tiny(model_type: str, **extra):
    return AutoConfig.for_model(model_type, **COMMON, **BERT_SHAPE, **extra)


@pytest.mark.parametrize("model_type", BERT_LAYOUT_TYPES)
def test_bert_layout_encoders_are_recognised_by_structure_and_work(model_type):
    config = tiny(model_type)
    family = family_of(config)
    assert family.name == model_type and family.paths == BERT_PATHS
    assert model_type not in supported_families()  # recognised, not registered
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    assert head_layout(model).num_heads == 4 and neuron_layout(model).num_neurons == 37
    batch = random_batch(model)
    heads = [(0, 1), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]  # layer 1 keeps no head
    neurons = [(0, n) for n in range(0, 37, 2)] + [(1, 5)]
    head_gate, neuron_gate = torch.ones(2, 4), torch.ones(2, 37)
    for layer, index in heads:
        head_gate[layer, index] = 0
    for layer, index in neurons:
        neuron_gate[layer, index] = 0
    with gate_heads(model, head_gate), gate_neurons(model, neuron_gate):
        masked = model(**batch).logits
    assert not torch.allclose(masked, model(**batch).logits, atol=1e-4)
    pruned = remove_units(copy.deepcopy(model), {"heads": heads, "neurons": neurons})
    assert_close(pruned(**batch).logits, masked, rtol=1e-5, atol=1e-5)


def test_what_structure_says_about_inputs_and_positions():
    assert family_of(tiny("camembert")).position_offset_from_padding  # RoBERTa-style
    assert not family_of(tiny("ernie")).position_offset_from_padding
    assert family_of(tiny("ernie")).takes_token_types
    assert not family_of(tiny("esm")).takes_token_types  # its forward has no token types
    assert family_of(tiny("megatron-bert")).class_prefix == "MegatronBert"


@pytest.mark.parametrize(("config", "reason"), [
    (GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16),
     "GPT2Model has no encoder.layer list"),
    (tiny("convbert"), "its self-attention has other parameters (conv_kernel_layer.bias"),
    (tiny("canine"), "it has attention outside encoder.layer"),
    (tiny("mobilebert"), "projections' sizes (128, 128, 37, 37) are not the config's"),
])
def test_anything_else_gets_one_line_naming_the_families_and_what_was_looked_for(config,
                                                                                  reason):
    with pytest.raises(UnsupportedModelError) as error:
        family_of(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"Unsupported architecture '{config.model_type}'. Supported: "
                              "bert, roberta, xlm-roberta, electra, distilbert, albert, "
                              "deberta, deberta-v2, modernbert, mpnet, and any encoder whose "
                              "layers have BERT's layout (encoder.layer[i] with "
                              "attention.self.{query,key,value}, attention.output.dense, "
                              "intermediate.dense and output.dense)")
    assert reason in message


def test_deberta_with_talking_heads_is_refused():
    model = make_model("deberta", talking_head=True)
    with pytest.raises(UnsupportedModelError, match="talking_head=True is not supported"):
        head_layout(model)


@pytest.fixture
def registry():
    """The registry as it was, restored after the test."""
    saved = list(REGISTERED.values())
    yield
    for name in supported_families():
        unregister_family(name)
    for family in saved:  # in their order: error messages list them so
        register_family(family)


def test_a_registered_adapter_takes_precedence_over_structure(registry):
    """RoFormer, registered by hand with a masked-LM head only at `cls` and no token types:
    the registered adapter is used, and works."""
    family = register_family(Family("roformer", dict(BERT_PATHS), module_head("cls"),
                                    "RoFormer", takes_token_types=False))
    assert family_of(make_config("roformer")) is family
    assert "roformer" in supported_families()
    model = make_model("roformer")
    batch = random_batch(model)
    gate = torch.ones(2, 4)
    gate[1, 2] = 0
    with gate_heads(model, gate):
        masked = model(**batch).logits
    pruned = remove_units(copy.deepcopy(model), {"heads": [(1, 2)]})
    assert_close(pruned(**batch).logits, masked, rtol=1e-5, atol=1e-5)


def test_a_user_adapter_for_other_module_names(registry):
    """An encoder whose layers keep BERT's modules under other names: MPNet's layout,
    registered under a new model_type for a config subclass, as a user would."""
    from transformers import MPNetConfig

    class RenamedConfig(MPNetConfig):
        model_type = "renamed-mpnet"

    paths = {"layers": "encoder.layer", "attention": "attention.attn",
             "head_rows": ["q", "k", "v"], "attention_output": "attention.attn.o",
             "intermediate": "intermediate.dense", "ffn_output": "output.dense",
             "head_bias_argument": "position_bias"}
    register_family(Family("renamed-mpnet", paths, module_head("lm_head"), "MPNet",
                           takes_token_types=False))
    model = make_model("mpnet")
    settings = {k: v for k, v in model.config.to_dict().items() if k != "model_type"}
    model.config = RenamedConfig(**settings)
    assert head_layout(model).family == "renamed-mpnet"
    batch = random_batch(model)
    gate = torch.ones(2, 4)
    gate[0, 0] = gate[0, 2] = 0
    with gate_heads(model, gate):
        masked = model(**batch).logits
    pruned = remove_units(copy.deepcopy(model), {"heads": [(0, 0), (0, 2)]})
    assert_close(pruned(**batch).logits, masked, rtol=1e-5, atol=1e-5)


def test_registering_checks_the_adapter(registry):
    with pytest.raises(ConfigError, match="'bert' is registered already; pass replace=True"):
        register_family(Family("bert", dict(BERT_PATHS), module_head("cls"), "Bert"))
    register_family(Family("bert", dict(BERT_PATHS), module_head("cls"), "Bert"),
                    replace=True)
    bad = {**BERT_PATHS, "fused_qvk": "Wqkv", "head_rows": "query"}
    del bad["ffn_output"]
    with pytest.raises(UnsupportedModelError) as error:
        register_family(Family("mine", bad, module_head("cls"), "Mine"))
    message = str(error.value)
    assert "paths lacks ffn_output" in message and "unknown keys fused_qvk" in message
    assert "paths['head_rows'] must be a list of names" in message
    assert "mine" not in supported_families()


def test_unregistering_falls_back_to_structure(registry):
    unregister_family("roberta")
    recognised = family_of(make_config("roberta"))  # BERT's layout, found by structure
    assert recognised.name == "roberta" and recognised.position_offset_from_padding
    assert recognised.class_prefix == "Roberta" and "roberta" not in supported_families()
    unregister_family("modernbert")
    with pytest.raises(UnsupportedModelError, match="ModernBertModel has no encoder.layer"):
        family_of(make_config("modernbert"))
    with pytest.raises(ConfigError, match="no family named 'modernbert' is registered"):
        unregister_family("modernbert")
