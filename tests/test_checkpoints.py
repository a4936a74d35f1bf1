"""Pruned checkpoints: save, load, identical outputs, clear errors on a bad layout."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAMILIES, make_model, random_batch, write_tokenizer
from torch.testing import assert_close
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from headcount.checkpoints import load_pruned, save_pruned, save_pruned_atomically
from headcount.errors import HeadcountError
from headcount.layouts import head_layout
from headcount.models import load_model
from headcount.removal import remove_heads

HEADS = {"albert": [(0, 0), (0, 2)]}
DEFAULT_HEADS = [(0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_gives_identical_outputs(family, tmp_path):
    model = remove_heads(make_model(family), HEADS.get(family, DEFAULT_HEADS))
    batch = random_batch(model)
    save_pruned(model, tmp_path)
    loaded, missing = load_pruned(tmp_path, AutoModelForSequenceClassification)
    assert missing == []
    assert head_layout(loaded).kept == head_layout(model).kept
    assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    layout = json.loads((tmp_path / "heads.json").read_text())
    assert layout["kept"] == [list(k) for k in head_layout(model).kept]


def test_masked_lm_round_trip_keeps_the_tied_decoder(tmp_path):
    model = remove_heads(make_model("bert", head="mlm"), DEFAULT_HEADS)
    batch = random_batch(model)
    save_pruned(model, tmp_path)
    loaded, missing = load_pruned(tmp_path, AutoModelForMaskedLM)
    assert missing == []
    assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_load_model_accepts_a_pruned_checkpoint_with_another_head(tmp_path):
    model = remove_heads(make_model("bert", head="mlm"), DEFAULT_HEADS)
    save_pruned(model, tmp_path, write_tokenizer(tmp_path / "tok"))
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no trained classification head"):
        loaded = load_model(str(tmp_path), "classification", num_labels=3, device="cpu")
    assert loaded.new_head and loaded.model.config.num_labels == 3
    assert head_layout(loaded.model).kept == head_layout(model).kept
    encoder = model.bert.state_dict()
    for name, tensor in loaded.model.bert.state_dict().items():
        if name in encoder:
            assert torch.equal(tensor, encoder[name]), name


def test_a_layout_that_does_not_match_the_weights_is_refused(tmp_path):
    model = remove_heads(make_model("bert"), DEFAULT_HEADS)
    save_pruned(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["headcount_kept_heads"] = [[0, 1, 2, 3], [0]]  # layer 0 really has 3 heads
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadcountError, match=r"does not match the weights: .*layer\.0"):
        load_pruned(tmp_path, AutoModelForSequenceClassification)


@pytest.mark.parametrize("bad", [[[0, 1]], [[0, 9], [1]], [[0, 0], [1]], "all"])
def test_a_malformed_layout_is_refused(tmp_path, bad):
    model = make_model("bert")
    save_pruned(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["headcount_kept_heads"] = bad
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadcountError, match="headcount_kept_heads"):
        load_pruned(tmp_path, AutoModelForSequenceClassification)


def test_atomic_save_refuses_a_non_empty_target_and_leaves_nothing_behind(tmp_path):
    model = make_model("bert")
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(HeadcountError, match="not an empty directory"):
        save_pruned_atomically(model, target)
    save_pruned_atomically(model, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]
