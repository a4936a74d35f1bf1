"""Unstructured weight-magnitude pruning: exact counts, the right weights, fixed masks.

Expected masks come from an independent brute force: a stable sort of all magnitudes (ties
stay in position order) whose first round(s * N) positions are the pruned ones.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import FAMILIES, make_model, save_checkpoint, toy_data, write_tokenizer

from headcount.checkpoints import save_pruned
from headcount.cli.app import main
from headcount.errors import ConfigError, HeadcountError
from headcount.evaluation import evaluate
from headcount.forward import task_outputs
from headcount.jobs.measure import evaluate_job
from headcount.jobs.prepared import DataOptions, load_for_task, prepare_for
from headcount.jobs.train import finetune_job
from headcount.models import CHECKPOINT_HEAD, load_model
from headcount.removal import remove_heads
from headcount.training import TrainingConfig, finetune
from headcount.weight_pruning import (
    RECORD_FILE,
    WEIGHT_PRUNING_KEY,
    apply_masks,
    magnitude_masks,
    masks_fixed,
    masks_from_zeros,
    prunable_weights,
    sparsity_curve,
    sparsity_report,
)

SPARSITIES = (0.0, 0.1, 0.2, 0.37, 0.5, 0.9)  # 0.2: the threshold is a tied value


def expected_names(model) -> list[str]:
    """Weight matrices of the encoder layers, by name: 2-D, inside a layer (ALBERT: its
    shared layer), not embeddings; found without looking at module types."""
    return [name for name, p in model.named_parameters()
            if p.dim() == 2 and any(part in name for part in (".layer.", ".layers.",
                                                              ".albert_layers."))]


def with_ties(model):
    """Make many magnitudes equal, within and across matrices, with both signs."""
    weights = list(prunable_weights(model).values())
    with torch.no_grad():
        weights[0].view(-1)[::2] = 0.05
        weights[0].view(-1)[1::4] = -0.05
        weights[1].fill_(-0.05)
        weights[2].view(-1)[:100] = 0.0
        weights[-1].view(-1)[5::3] = 0.05
        weights[3].view(-1)[:4] = torch.tensor([1e-40, -1e-40, 3e30, 0.0])  # subnormal, huge
    return model


def brute_force(tensors: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    flat = torch.cat([t.detach().abs().reshape(-1) for t in tensors])
    pruned = torch.zeros(flat.numel(), dtype=torch.bool)
    pruned[torch.sort(flat, stable=True).indices[:count]] = True
    keeps, start = [], 0
    for t in tensors:
        keeps.append(~pruned[start:start + t.numel()].view(t.shape))
        start += t.numel()
    return keeps


@pytest.mark.parametrize("family", FAMILIES)
def test_prunable_weights_are_the_encoder_layers_matrices(family):
    model = make_model(family, head="mlm" if family == "albert" else "classification")
    assert list(prunable_weights(model)) == expected_names(model)
    layers = 1 if family == "albert" else 2  # ALBERT: one shared layer, pruned once
    # ModernBERT: Wqkv, Wo, Wi, Wo; DeBERTa: in_proj, pos_proj, pos_q_proj, the output and
    # the feed-forward's two; the others q, k, v, o and the feed-forward's two
    per_layer = 4 if family == "modernbert" else 6
    assert len(prunable_weights(model)) == per_layer * layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_count_is_exact_with_ties_and_matches_brute_force(sparsity, dtype):
    model = with_ties(make_model("bert")).to(dtype)  # bfloat16: many more ties
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    masks = magnitude_masks(model, sparsity, "global")
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
    expected = brute_force(list(weights.values()), round(sparsity * total))
    for (name, keep), want in zip(masks.items(), expected, strict=True):
        assert torch.equal(keep, want), name
    kept = torch.cat([w.detach().abs()[m] for w, m in zip(weights.values(), masks.values(),
                                                           strict=True)])
    pruned = torch.cat([w.detach().abs()[~m] for w, m in zip(weights.values(), masks.values(),
                                                             strict=True)])
    if pruned.numel():
        assert kept.min() >= pruned.max()


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_layer_scope_prunes_exactly_in_each_matrix(sparsity):
    model = with_ties(make_model("bert"))
    masks = magnitude_masks(model, sparsity, "layer")
    for name, weight in prunable_weights(model).items():
        keep = masks[name]
        assert int((~keep).sum()) == round(sparsity * weight.numel()), name
        assert torch.equal(keep, brute_force([weight], round(sparsity * weight.numel()))[0])
        if (~keep).any():
            assert weight.abs()[keep].min() >= weight.abs()[~keep].max()


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert", "electra"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_apply_zeroes_exactly_the_masked_weights_and_nothing_else(family, scope):
    model = make_model(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    masks = magnitude_masks(model, 0.6, scope)
    apply_masks(model, masks)
    for name, parameter in model.named_parameters():
        if name in masks:
            assert torch.equal(parameter[~masks[name]], torch.zeros(int((~masks[name]).sum())))
            assert torch.equal(parameter[masks[name]], before[name][masks[name]])
        else:  # embeddings, biases, LayerNorm, pooler, classifier
            assert torch.equal(parameter, before[name]), name
    report = sparsity_report(model)
    assert report["zeros"] == sum(int((~m).sum()) for m in masks.values())
    assert report["size"] == sum(m.numel() for m in masks.values())
    assert {name: entry["zeros"] for name, entry in report["matrices"].items()} == {
        name: int((~m).sum()) for name, m in masks.items()}
    assert {n: torch.equal(m, masks[n]) for n, m in masks_from_zeros(model).items()} == {
        n: True for n in masks}
    assert model(input_ids=torch.tensor([[2, 7, 9, 3]])).logits.isfinite().all()


def test_head_pruned_bert_with_an_empty_layer_prunes_exactly():
    model = remove_heads(make_model("bert"), [(0, 1), (1, 0), (1, 1), (1, 2), (1, 3)])
    weights = prunable_weights(model)
    # Layer 1 lost every head: its empty q/k/v/output projections are skipped.
    assert all(w.numel() > 0 for w in weights.values())
    assert not any(".layer.1.attention." in name for name in weights)
    assert weights["bert.encoder.layer.0.attention.self.query.weight"].shape[0] == 3 * 8
    total = sum(w.numel() for w in weights.values())
    masks = magnitude_masks(model, 0.45)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.45 * total)
    apply_masks(model, masks)
    assert sparsity_report(model)["zeros"] == round(0.45 * total)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
        magnitude_masks(make_model("bert"), bad)


def test_unknown_scope_and_foreign_masks_are_refused():
    model = make_model("bert")
    with pytest.raises(ConfigError, match="Unknown scope 'glob'. Did you mean: global?"):
        magnitude_masks(model, 0.1, "glob")
    with pytest.raises(HeadcountError, match="does not prune"):
        apply_masks(model, {"bert.embeddings.word_embeddings.weight": torch.ones(1)})
    name = next(iter(prunable_weights(model)))
    with pytest.raises(HeadcountError, match="has shape"):
        apply_masks(model, {name: torch.ones(3, 3, dtype=torch.bool)})


# --- fine-tuning with fixed masks -------------------------------------------------------


# Large rate and decay, warm-up: every unmasked weight moves, and a zero would too.
STRONG = TrainingConfig(epochs=2, learning_rate=5e-2, batch_size=8, warmup=0.3,
                        weight_decay=0.1, seed=3)


def pruned_model(family="bert"):
    model = make_model(family)
    masks = magnitude_masks(model, 0.5)
    apply_masks(model, masks)
    return model, masks


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_finetuning_with_masks_keeps_pruned_weights_exactly_zero(family):
    model, masks = pruned_model(family)
    before = {name: w.detach().clone() for name, w in prunable_weights(model).items()}
    result = finetune(model, toy_data(), STRONG, weight_masks=masks)
    assert result.steps == 6
    for name, weight in prunable_weights(model).items():
        assert torch.equal(weight[~masks[name]], torch.zeros(int((~masks[name]).sum()))), name
        moved = weight[masks[name]] != before[name][masks[name]]
        assert moved.float().mean() > 0.9, name
    # the hooks are gone: a plain backward gives the pruned weights a gradient again
    batch = next(toy_data().batches(8))
    model.train()
    model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits.sum().backward()
    name, weight = next(iter(prunable_weights(model).items()))
    assert weight.grad[~masks[name]].abs().sum() > 0


def test_without_masks_the_pruned_weights_come_back():
    model, masks = pruned_model()
    finetune(model, toy_data(), STRONG)
    revived = sum(int((w[~masks[n]] != 0).sum()) for n, w in prunable_weights(model).items())
    assert revived > 0.9 * sum(int((~m).sum()) for m in masks.values())


def test_masks_fixed_removes_its_hooks_after_an_error():
    model, masks = pruned_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="boom"), masks_fixed(model, masks, optimizer):
        raise RuntimeError("boom")
    assert not optimizer._optimizer_step_post_hooks
    assert all(not w._backward_hooks for w in prunable_weights(model).values())


# --- CLI and jobs -----------------------------------------------------------------------

def read_weights(directory):
    model = load_model(str(directory), CHECKPOINT_HEAD, device="cpu").model
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_weights_prune_cli_round_trip_on_a_head_pruned_checkpoint(tmp_path, capsys):
    base = tmp_path / "base"
    model = remove_heads(make_model("bert"), [(0, 2), (1, 0)])
    save_pruned(model, base, write_tokenizer(base))
    out = tmp_path / "sparse"
    argv = ["weights-prune", str(base), "--sparsity", "0.4", "--scope", "layer",
            "--out", str(out)]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    record = json.loads((out / RECORD_FILE).read_text())
    loaded, weights = read_weights(out)
    _, original = read_weights(base)
    report = sparsity_report(loaded)
    assert report["zeros"] == record["achieved"]["zeros"] == record["pruned"] == sum(
        round(0.4 * w.numel()) for w in prunable_weights(loaded).values())
    assert record["matrices"] == report["matrices"]
    assert record["sparsity_requested"] == 0.4 and record["scope"] == "layer"
    assert getattr(loaded.config, WEIGHT_PRUNING_KEY)["scope"] == "layer"
    assert loaded.config.headcount_kept_heads == [[0, 1, 3], [1, 2, 3]]
    for name, tensor in weights.items():
        if name not in prunable_weights(loaded):
            assert torch.equal(tensor, original[name]), name
    # non-empty target, bad sparsity and scope: one-line errors, no traceback
    assert main(argv) == 2
    assert "not an empty directory" in capsys.readouterr().err
    for flags, message in ([["--sparsity", "1.0"], "--sparsity 1.0 is outside [0, 1)"],
                           [["--sparsity", "-0.1"], "--sparsity -0.1 is outside [0, 1)"],
                           [["--sparsity", "0.2", "--scope", "layers"],
                            "Unknown scope 'layers'. Did you mean: layer?"]):
        code = main(["weights-prune", str(base), *flags, "--out", str(tmp_path / "x")])
        assert code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_finetune_job_keeps_the_zeros_of_a_weight_pruned_checkpoint(tmp_path, capsys):
    base = save_checkpoint(tmp_path / "base")
    sparse = tmp_path / "sparse"
    assert main(["weights-prune", str(base), "--sparsity", "0.5", "--out", str(sparse)]) == 0
    table = tmp_path / "train.tsv"
    words = ["good movie", "bad film", "great story", "terrible acting", "fun cat", "boring dog"]
    table.write_text("text\tlabel\n" + "".join(f"{w} {i}\t{i % 2}\n"
                                               for i, w in enumerate(words * 4)))
    options = DataOptions(f"file:{table}", text_column="text", label_column="label",
                          batch_size=8, max_length=16)
    config = TrainingConfig(epochs=2, learning_rate=5e-2, batch_size=8, warmup=0.2,
                            weight_decay=0.1, seed=1)
    tuned = tmp_path / "tuned"
    record = finetune_job(str(sparse), options, config, str(tuned), device="cpu")
    assert record["weight_pruning"]["sparsity"] == 0.5
    assert record["weight_pruning"]["sparsity_after_training"] == \
        record["weight_pruning"]["achieved"] == 0.5
    before, start = read_weights(sparse)
    after, end = read_weights(tuned)
    masks = masks_from_zeros(before)
    for name, keep in masks.items():
        assert torch.equal(end[name][~keep], torch.zeros(int((~keep).sum()))), name
        assert (end[name][keep] != start[name][keep]).float().mean() > 0.9, name
    # the fine-tuned checkpoint still says it is pruned, so fine-tuning it again keeps zeros
    assert getattr(after.config, WEIGHT_PRUNING_KEY)["scope"] == "global"


@pytest.fixture(scope="module")
def mlm_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "toy.txt"
    sentence = "the cat sat on the mat . the dog was not a good dog . what is the answer ?"
    path.write_text("\n".join(f"{sentence} {i}" for i in range(20)) + "\n")
    return path


def fitted_mlm_checkpoint(directory, text):
    """A tiny masked LM trained a little on `text`, so that recall@1 is not 0."""
    save_checkpoint(directory, head="mlm")
    options = DataOptions(f"mlm:{text}", split="train", batch_size=8, max_length=24)
    task = options.resolve()
    loaded = load_for_task(str(directory), task, device="cpu")
    data = prepare_for(loaded, task, options)
    optimizer = torch.optim.Adam(loaded.model.parameters(), lr=1e-2)
    loaded.model.train()
    for _ in range(8):
        for batch in data.batches(8):
            task_outputs(loaded.model, batch, data.kind).losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    loaded.model.save_pretrained(directory)
    return directory


def test_sparsity_curve_cli_on_masked_lm(tmp_path, mlm_text, capsys):
    base = fitted_mlm_checkpoint(tmp_path / "mlm", mlm_text)
    out = tmp_path / "curve.csv"
    flags = ["--task", f"mlm:{mlm_text}", "--max-length", "24", "--batch-size", "8",
             "--device", "cpu", "--quiet"]
    assert main(["sparsity-curve", str(base), *flags, "--sparsities", "0.9", "0.5",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [float(r["sparsity_requested"]) for r in rows] == [0.0, 0.5, 0.9]
    assert {r["metric"] for r in rows} == {"recall@1"}
    assert all(r["scope"] == "global" and r["model"] == str(base) for r in rows)
    unpruned = evaluate_job(str(base), DataOptions(f"mlm:{mlm_text}", split="dev",
                                                   batch_size=8, max_length=24), device="cpu")
    assert float(rows[0]["value"]) == pytest.approx(unpruned["metrics"]["recall@1"], abs=1e-12)
    assert float(rows[0]["mean_loss"]) == pytest.approx(unpruned["mean_loss"], rel=1e-6)
    assert float(rows[0]["value"]) > 0.2 and float(rows[0]["relative"]) == 1.0
    assert float(rows[2]["relative"]) == pytest.approx(
        float(rows[2]["value"]) / float(rows[0]["value"]))
    # level 0.9 is the model pruned on its own (not cumulatively), evaluated independently
    options = DataOptions(f"mlm:{mlm_text}", split="dev", batch_size=8, max_length=24)
    task = options.resolve()
    loaded = load_for_task(str(base), task, device="cpu")
    apply_masks(loaded.model, magnitude_masks(loaded.model, 0.9))
    data = prepare_for(loaded, task, options)
    pruned = evaluate(loaded.model, data.batches(8), data.kind, task.metric)
    assert float(rows[2]["value"]) == pytest.approx(pruned.metrics["recall@1"], abs=1e-12)
    assert float(rows[2]["mean_loss"]) == pytest.approx(pruned.mean_loss, rel=1e-6)
    assert float(rows[2]["mean_loss"]) != pytest.approx(float(rows[0]["mean_loss"]), rel=1e-3)
    size = sum(w.numel() for w in prunable_weights(loaded.model).values())
    assert float(rows[2]["sparsity_achieved"]) == pytest.approx(round(0.9 * size) / size)
    assert main(["sparsity-curve", str(base), *flags, "--sparsities", "1",
                 "--out", str(out)]) == 2
    assert "--sparsity 1.0 is outside [0, 1)" in capsys.readouterr().err


def test_sparsity_curve_restores_the_original_weights_even_after_an_error():
    model = make_model("bert", head="mlm")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    class Result:
        metrics, main, mean_loss = {"recall@1": 0.5}, "recall@1", 1.0

    def evaluate_model(candidate):
        seen.append(sparsity_report(candidate)["sparsity"])
        return Result()

    rows = sparsity_curve(model, evaluate_model, [0.3, 0.6], scope="layer")
    assert [r["sparsity_requested"] for r in rows] == [0.0, 0.3, 0.6]
    assert seen[0] == 0 and seen[1] == pytest.approx(0.3, abs=0.01) and seen[2] > seen[1]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    def failing(candidate):
        if sparsity_report(candidate)["sparsity"] > 0:
            raise RuntimeError("evaluation failed")
        return Result()

    with pytest.raises(RuntimeError):
        sparsity_curve(model, failing, [0.5])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
