"""Fine-tuning: reproducible from the seed, frozen layers untouched, pruned heads stay out."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, save_checkpoint, toy_data

from headcount.checkpoints import save_pruned
from headcount.cli.app import main
from headcount.errors import ConfigError, UnsupportedModelError
from headcount.layouts import head_layout
from headcount.removal import remove_heads
from headcount.training import TrainingConfig, finetune, freeze_lower_layers, loss_quarters

FAST = TrainingConfig(epochs=2, learning_rate=5e-3, batch_size=8, warmup=0.0, seed=7)


def trained(family="bert", config=FAST, seed=0):
    model = make_model(family, seed=seed)
    finetune(model, toy_data(), config)
    return model


def test_same_seed_same_weights_and_another_seed_differs():
    first, second = trained().state_dict(), trained().state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    third = trained(config=TrainingConfig(**{**FAST.__dict__, "seed": 8})).state_dict()
    assert any(not torch.equal(first[name], third[name]) for name in first)


def test_training_loss_per_quarter_of_the_steps():
    assert loss_quarters([4.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]) == (3.5, 2.0, 1.0, 1.0)
    assert loss_quarters([3.0, 1.0]) == (3.0, 1.0) and loss_quarters([]) == ()
    assert loss_quarters([1.0] * 5) == (1.0, 1.0, 1.0, 1.0)
    result = finetune(make_model("bert"), toy_data(), FAST)
    assert len(result.loss_quarters) == 4 and all(v > 0 for v in result.loss_quarters)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_frozen_layers_stay_bit_identical(family):
    model = make_model(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainingConfig(**{**FAST.__dict__, "freeze_layers": 1})
    result = finetune(model, toy_data(), config)
    assert result.frozen_parameters > 0
    prefix = "bert" if family == "bert" else "distilbert"
    layer_path = "encoder.layer" if family == "bert" else "transformer.layer"
    frozen = (f"{prefix}.embeddings.", f"{prefix}.{layer_path}.0.")
    changed = {name for name, p in model.named_parameters()
               if not torch.equal(p.detach(), before[name])}
    for name in before:
        if name.startswith(frozen):
            assert name not in changed, name
    assert any(name.startswith(f"{prefix}.{layer_path}.1.") for name in changed)
    assert sum(before[n].numel() for n in before if n.startswith(frozen)) == \
        result.frozen_parameters


def test_freezing_albert_layers_is_refused_and_too_many_layers_too():
    with pytest.raises(UnsupportedModelError, match="share one set of weights"):
        freeze_lower_layers(make_model("albert"), 1)
    with pytest.raises(ConfigError, match="has 2 layers"):
        freeze_lower_layers(make_model("bert"), 3)


def test_a_pruned_model_fine_tunes_with_its_heads_still_removed(tmp_path):
    model = remove_heads(make_model("bert"), [(0, 1), (1, 0), (1, 3)])
    kept = head_layout(model).kept
    finetune(model, toy_data(), FAST)
    assert head_layout(model).kept == kept
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape[0] == 3 * 8
    save_pruned(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["headcount_kept_heads"] == [
        list(k) for k in kept]


@pytest.mark.parametrize("bad, message", [
    ({"epochs": 0}, "--epochs 0"), ({"learning_rate": -1.0}, "--lr -1.0"),
    ({"warmup": 1.5}, "--warmup 1.5"), ({"batch_size": 0}, "--batch-size 0"),
])
def test_bad_training_options_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**bad).validate()


def test_cli_finetune_saves_checkpoint_and_metrics(tmp_path, glue_dir, capsys):
    base = save_checkpoint(tmp_path / "base")
    out = tmp_path / "tuned"
    argv = ["finetune", str(base), "--task", "rte", "--data-dir", str(glue_dir),
            "--max-examples", "32", "--batch-size", "8", "--max-length", "32", "--epochs", "1",
            "--lr", "1e-3", "--seed", "3", "--freeze-layers", "1", "--device", "cpu",
            "--quiet", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["steps"] == 4 and record["eval_examples"] == 277
    assert 0 <= record["metrics"]["accuracy"] <= 1 and record["frozen_parameters"] > 0
    assert len(record["train_loss_quarters"]) == 4  # one mean per step here (4 steps)
    # the fine-tuned checkpoint is a MODEL for the other commands
    assert main(["evaluate", str(out), "--task", "rte", "--data-dir", str(glue_dir),
                 "--max-length", "32", "--device", "cpu", "--quiet"]) == 0
    assert f"accuracy={record['metrics']['accuracy']:.4f}" in capsys.readouterr().out
    # an existing, non-empty output directory is refused before any work
    assert main(argv) == 2
    assert "not an empty directory" in capsys.readouterr().err


def test_cli_finetune_refuses_masked_lm(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\n")
    base = save_checkpoint(tmp_path / "base")
    code = main(["finetune", str(base), "--task", f"mlm:{text}", "--device", "cpu",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "classification and regression" in capsys.readouterr().err
