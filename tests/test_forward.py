"""Task losses and predictions against the models' own full computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, make_model, random_batch
from torch.testing import assert_close

from headcount.errors import UnsupportedModelError
from headcount.forward import task_outputs
from headcount.tasks.mlm import IGNORE_INDEX

# Every family, and DeBERTa's current head (legacy=False: it takes the word embeddings)
MLM_CASES = [(family, {}) for family in FAMILIES] + [("deberta", {"legacy": False}),
                                                     ("deberta-v2", {"legacy": False})]


def masked_batch(model, seed=3):
    batch = random_batch(model, batch_size=3, seq_len=12, seed=seed, pad_last=4)
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    labels[0, [1, 4, 7]] = batch["input_ids"][0, [1, 4, 7]]
    labels[1, 2] = batch["input_ids"][1, 2]
    labels[2, [0, 5]] = 17  # a different token than the input: a "random replacement"
    batch["labels"] = labels
    return batch


@pytest.mark.parametrize("family, overrides", MLM_CASES)
def test_logits_at_masked_positions_equal_the_full_logits(family, overrides):
    model = make_model(family, head="mlm", **overrides)
    batch = masked_batch(model)
    outputs = task_outputs(model, batch, "mlm")
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    positions = batch["labels"] != IGNORE_INDEX
    assert_close(outputs.predictions, full[positions].argmax(-1))
    assert_close(outputs.references, batch["labels"][positions])
    per_token = F.cross_entropy(full[positions], batch["labels"][positions], reduction="none")
    expected = torch.stack([per_token[:3].mean(), per_token[3:4].mean(), per_token[4:].mean()])
    assert_close(outputs.losses, expected, rtol=1e-5, atol=1e-6)
    # The mean over masked tokens of all examples is the model's own MLM loss.
    own = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    assert_close(per_token.mean(), own, rtol=1e-5, atol=1e-6)


def test_masked_lm_on_a_model_without_an_mlm_head_is_refused():
    model = make_model("bert")
    with pytest.raises(UnsupportedModelError, match="no masked-LM head"):
        task_outputs(model, masked_batch(model), "mlm")


def test_classification_losses_are_per_example_cross_entropy():
    model = make_model("electra", num_labels=3)
    batch = random_batch(model, 4, 6)
    batch["labels"] = torch.tensor([0, 2, 1, 2])
    outputs = task_outputs(model, batch, "classification")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert_close(outputs.losses, F.cross_entropy(logits, batch["labels"], reduction="none"))
    assert_close(outputs.predictions, logits.argmax(-1))
