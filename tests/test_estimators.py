"""The extra importance estimators checked against independent computations: brute-force
ablation loops, transformers' own attention probabilities, explicit weight slices."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import (
    FAMILIES,
    classification_batch,
    make_config,
    make_model,
    mlm_batch,
)
from torch.testing import assert_close

import headcount.ablation as ablation
from headcount.ablation import ablation_importance, auto_heads_per_pass
from headcount.arch import attention_blocks, distinct_layers
from headcount.attention import attention_statistics
from headcount.choices import ESTIMATORS
from headcount.cli.app import main
from headcount.errors import ConfigError
from headcount.estimators import estimate_importance, magnitude_importance
from headcount.forward import task_outputs
from headcount.gates import gate_heads
from headcount.importance import head_importance
from headcount.layouts import head_layout
from headcount.removal import remove_heads
from headcount.tasks.mlm import IGNORE_INDEX

# --------------------------------------------------------------------------- helpers




def uneven(batch, first=3):
    """The batch split into two batches of different sizes."""
    return [{k: v[:first] for k, v in batch.items()}, {k: v[first:] for k, v in batch.items()}]


def singles(batch):
    """The batch's examples one at a time, padding removed."""
    out = []
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        out.append({name: (t[row:row + 1, :length] if t.dim() == 2 else t[row:row + 1])
                    for name, t in batch.items()})
    return out


def mean_loss(model, batches, kind, gate=None, shared=False):
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            if gate is None:
                losses = task_outputs(model, batch, kind).losses
            else:
                with gate_heads(model, gate, shared=shared):
                    losses = task_outputs(model, batch, kind).losses
            total += float(losses.double().sum())
            count += losses.shape[0]
    return total / count


def brute_force_ablation(model, batches, kind, shared=False):
    """For each head present: mean loss with a 0/1 mask switching it off, minus the mean
    loss unmasked. Removed heads stay 0."""
    layout = head_layout(model)
    rows = 1 if shared else layout.num_layers
    base = mean_loss(model, batches, kind)
    expected = torch.zeros(rows, layout.num_heads, dtype=torch.float64)
    for row in range(rows):
        for head in layout.kept_in_application(row):
            mask = torch.ones(layout.num_heads) if shared else torch.ones(
                layout.num_layers, layout.num_heads)
            mask[(head,) if shared else (row, head)] = 0
            expected[row, head] = mean_loss(model, batches, kind, mask, shared) - base
    return expected


# --------------------------------------------------------------------------- ablation


@pytest.mark.parametrize("heads_per_pass", [1, 3, None])
@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_equals_brute_force(family, heads_per_pass):
    model = make_model(family, dtype=torch.float64)
    batches = uneven(classification_batch(model))
    shared = family == "albert"
    expected = brute_force_ablation(model, batches, "classification", shared=shared)
    result = estimate_importance(model, batches, "classification", "ablation",
                                 heads_per_pass=heads_per_pass)
    assert result.shared is shared and result.num_examples == 5
    assert result.raw.shape == expected.shape
    assert expected.abs().max() > 1e-3  # heads matter: the check can fail
    assert (expected < 0).any() or (expected > 0).all()
    assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-7)
    assert result.mean_loss == pytest.approx(mean_loss(model, batches, "classification"))


@pytest.mark.parametrize("heads_per_pass", [1, 3, None])
def test_albert_ablation_per_application(heads_per_pass):
    model = make_model("albert", dtype=torch.float64)
    batches = uneven(classification_batch(model))
    expected = brute_force_ablation(model, batches, "classification", shared=False)
    result = ablation_importance(model, batches, "classification", shared=False,
                                 heads_per_pass=heads_per_pass)
    assert result.raw.shape == (3, 4) and not result.shared
    assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-7)
    # Switching a head off in every application is not the sum of one-at-a-time effects.
    shared = ablation_importance(model, batches, "classification").raw.double()
    assert not torch.allclose(shared[0], expected.sum(0), rtol=1e-3)


@pytest.mark.parametrize("heads_per_pass", [1, 3, None])
@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_masked_lm_ablation_equals_brute_force(family, heads_per_pass):
    model = make_model(family, head="mlm", dtype=torch.float64)
    batches = uneven(mlm_batch(model, batch_size=5), first=2)
    shared = family == "albert"
    expected = brute_force_ablation(model, batches, "mlm", shared=shared)
    result = ablation_importance(model, batches, "mlm", heads_per_pass=heads_per_pass)
    assert expected.abs().max() > 1e-3
    assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("heads_per_pass", [1, 3, None])
@pytest.mark.parametrize("family, removed", [
    ("bert", [(0, 1), (1, 0), (1, 2)]),
    ("distilbert", [(1, 0), (1, 1), (1, 2), (1, 3), (0, 3)]),  # layer 1 left empty
    ("albert", [(0, 2)]),
])
def test_ablation_of_a_physically_pruned_model(family, removed, heads_per_pass):
    model = remove_heads(make_model(family, dtype=torch.float64), removed)
    batches = uneven(classification_batch(model))
    expected = brute_force_ablation(model, batches, "classification",
                                    shared=family == "albert")
    result = ablation_importance(model, batches, "classification",
                                 heads_per_pass=heads_per_pass)
    assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-7)
    for layer, head in removed:
        assert result.raw[layer, head] == 0
    kept = head_layout(model).kept
    assert all(result.raw[layer, head] != 0 for layer, heads in enumerate(kept)
               for head in heads)


def three_layer_model(family):
    """A tiny 3-layer model: two layers below the top one to replay."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    layers = {"n_layers": 3} if family == "distilbert" else {"num_hidden_layers": 3}
    config = make_config(family, num_labels=2, **layers)
    return AutoModelForSequenceClassification.from_config(config).double().eval()


@pytest.mark.parametrize("heads_per_pass, passes_per_batch", [
    (1, 3 + 4 * (3 + 2 + 1)),  # plain pass + each head runs its layer and those above
    (3, 3 + 2 * (3 + 2 + 1)),  # 2 chunks (3 + 1 heads) per layer
])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_ablation_runs_only_the_layers_from_the_ablated_one_up(family, heads_per_pass,
                                                                passes_per_batch):
    """Real layer calls are counted: H·L·L + L = 39 per batch (K=1) without prefix reuse."""
    model = three_layer_model(family)
    stack = ablation.replayable_layers(model, head_layout(model))
    assert stack is not None and len(stack) == 3
    layers = list(stack)
    batches = uneven(classification_batch(model))
    expected = brute_force_ablation(model, batches, "classification")
    calls = [0]
    handles = [layer.register_forward_pre_hook(lambda module, args: calls.__setitem__(
        0, calls[0] + 1)) for layer in layers]
    try:
        result = ablation_importance(model, batches, "classification",
                                     heads_per_pass=heads_per_pass)
    finally:
        for handle in handles:
            handle.remove()
    assert calls[0] == 2 * passes_per_batch  # two batches
    assert_close(result.raw.double(), expected, rtol=1e-5, atol=1e-7)
    assert all(a is b for a, b in zip(stack, layers, strict=True))


def test_albert_takes_full_forwards():
    model = make_model("albert")
    assert ablation.replayable_layers(model, head_layout(model)) is None


def test_layers_are_restored_after_an_exception(monkeypatch):
    model = three_layer_model("bert")
    stack = ablation.replayable_layers(model, head_layout(model))
    layers = list(stack)
    real = ablation.task_outputs

    def failing(model, batch, kind):
        if any(isinstance(layer, ablation.Replay) for layer in stack):
            raise RuntimeError("boom")
        return real(model, batch, kind)

    monkeypatch.setattr(ablation, "task_outputs", failing)
    batches = uneven(classification_batch(model))
    with pytest.raises(RuntimeError, match="boom"):
        ablation_importance(model, batches, "classification", heads_per_pass=2)
    assert all(a is b for a, b in zip(stack, layers, strict=True))
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks)
               for m in model.modules()) == 0
    monkeypatch.setattr(ablation, "task_outputs", real)
    assert_close(ablation_importance(model, batches, "classification").raw.double(),
                 brute_force_ablation(model, batches, "classification"), rtol=1e-5, atol=1e-7)


def test_float32_ablation_is_close_to_float64():
    model = make_model("bert")
    batches = uneven(classification_batch(model, batch_size=7), first=4)
    result = ablation_importance(model, batches, "classification", heads_per_pass=5)
    reference = brute_force_ablation(model.double(), [
        {k: v for k, v in b.items()} for b in batches], "classification")
    assert_close(result.raw.double(), reference, rtol=1e-4, atol=2e-6)


def test_auto_heads_per_pass_follows_the_memory_budget(monkeypatch):
    model = make_model("bert", dtype=torch.float64)
    batch = classification_batch(model, batch_size=5, seq_len=8)
    per_example = ablation.activation_bytes_per_example(model, batch)
    # e * S * (8D + 2I + 3HS) with e=8, S=8, D=32, I=37, H=4
    assert per_example == 8 * 8 * (8 * 32 + 2 * 37 + 3 * 4 * 8)
    monkeypatch.setattr(ablation, "memory_budget", lambda device: 2 * 5 * per_example + 1)
    assert auto_heads_per_pass(model, batch, heads=8) == 2
    monkeypatch.setattr(ablation, "memory_budget", lambda device: 1)
    assert auto_heads_per_pass(model, batch, heads=8) == 1
    monkeypatch.setattr(ablation, "memory_budget", lambda device: 1 << 40)
    assert auto_heads_per_pass(model, batch, heads=8) == 8
    # MLM adds the vocabulary logits of the masked positions (12 bytes per logit).
    lm = make_model("bert", head="mlm", dtype=torch.float64)
    lm_batch = mlm_batch(lm, batch_size=4)
    masked = int((lm_batch["labels"] != IGNORE_INDEX).sum())
    assert ablation.activation_bytes_per_example(lm, lm_batch) == (
        8 * 10 * (8 * 32 + 2 * 37 + 3 * 4 * 10) + math.ceil(masked / 4) * 128 * 12)


def test_auto_ablation_with_a_small_budget_still_equals_brute_force(monkeypatch):
    model = make_model("electra", dtype=torch.float64)
    batches = uneven(classification_batch(model))
    calls = []
    real = ablation.auto_heads_per_pass

    def spy(model, batch, heads):
        calls.append(real(model, batch, heads))
        return calls[-1]

    per_example = ablation.activation_bytes_per_example(model, batches[0])
    monkeypatch.setattr(ablation, "memory_budget", lambda device: 3 * 3 * per_example)
    monkeypatch.setattr(ablation, "auto_heads_per_pass", spy)
    result = ablation_importance(model, batches, "classification")
    assert calls[0] == 3 and calls[1] == 4  # the second batch has 2 examples
    assert_close(result.raw.double(), brute_force_ablation(model, batches, "classification"),
                 rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- attention


def hand_statistics(eager_model, batch, shared):
    """Entropy, focus, confidence from transformers' own output_attentions, one unpadded
    example at a time."""
    layout = head_layout(eager_model)
    rows = 1 if shared else layout.num_layers
    sums = torch.zeros(3, rows, layout.num_heads, dtype=torch.float64)
    examples = singles(batch)
    with torch.no_grad():
        for example in examples:
            inputs = {k: v for k, v in example.items() if k != "labels"}
            attentions = eager_model(**inputs, output_attentions=True).attentions
            present = [layer for layer in range(layout.num_layers)
                       if layout.kept_in_application(layer)]
            assert len(attentions) == len(present)
            for layer, attention in zip(present, attentions, strict=True):
                keys = attention.shape[-1]
                for position, head in enumerate(layout.kept_in_application(layer)):
                    p = attention[0, position].double()  # [queries, keys]
                    entropy = torch.tensor(  # per query, then mean over queries
                        [-sum(x * math.log(x) for x in row if x > 0) for row in p.tolist()],
                        dtype=torch.float64).mean()
                    confidence = torch.tensor([max(row) for row in p.tolist()],
                                              dtype=torch.float64).mean()
                    row = 0 if shared else layer
                    sums[0, row, head] += entropy
                    sums[1, row, head] += math.log(keys) - entropy
                    sums[2, row, head] += confidence
    means = sums / (len(examples) * (layout.num_layers if shared else 1))
    for row in range(rows):
        missing = set(range(layout.num_heads)) - set(layout.kept_in_application(row))
        means[:, row, sorted(missing)] = float("nan")
    return means


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_statistics_equal_transformers_attentions(family):
    model = make_model(family, dtype=torch.float64)  # SDPA: switched to eager for the call
    implementation = model.config._attn_implementation  # eager where there is no SDPA
    eager = make_model(family, attn="eager", dtype=torch.float64)
    batch = classification_batch(model, batch_size=5)
    shared = family == "albert"
    expected = hand_statistics(eager, batch, shared)
    stats = attention_statistics(model, uneven(batch), "classification")
    assert stats.num_examples == 5 and stats.shared is shared
    # ModernBERT's eager softmax runs in float32 whatever the model's dtype: padded and
    # unpadded examples then agree to float32 rounding only
    rtol, atol = (1e-6, 1e-7) if family == "modernbert" else (1e-9, 1e-10)
    for index, name in enumerate(("entropy", "focus", "confidence")):
        assert_close(getattr(stats, name), expected[index], rtol=rtol, atol=atol)
    assert stats.mean_loss == pytest.approx(mean_loss(model, [batch], "classification"))
    assert model.config._attn_implementation == implementation  # switched back
    focus = estimate_importance(model, [batch], "classification", "entropy")
    confidence = estimate_importance(model, [batch], "classification", "confidence")
    assert_close(focus.raw.double(), expected[1], rtol=1e-6, atol=1e-7)
    assert_close(confidence.raw.double(), expected[2], rtol=1e-6, atol=1e-7)


def test_albert_attention_statistics_per_application():
    model = make_model("albert", dtype=torch.float64, attn="eager")
    batch = classification_batch(model)
    stats = attention_statistics(model, [batch], shared=False)
    expected = hand_statistics(model, batch, shared=False)
    assert stats.entropy.shape == (3, 4)
    assert_close(stats.entropy, expected[0], rtol=1e-9, atol=1e-10)
    assert_close(stats.confidence, expected[2], rtol=1e-9, atol=1e-10)
    assert math.isnan(stats.mean_loss)  # no task kind: encoder only
    shared = attention_statistics(model, [batch])
    assert_close(shared.entropy[0], stats.entropy.mean(dim=0), rtol=1e-9, atol=1e-12)


def test_attention_statistics_of_a_pruned_model():
    removed = [(0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]  # layer 1 left without heads
    model = remove_heads(make_model("bert", dtype=torch.float64), removed)
    eager = remove_heads(make_model("bert", dtype=torch.float64, attn="eager"), removed)
    batch = classification_batch(model)
    expected = hand_statistics(eager, batch, shared=False)
    stats = attention_statistics(model, [batch], "classification")
    assert_close(stats.entropy, expected[0], rtol=1e-9, atol=1e-10, equal_nan=True)
    assert stats.entropy.isnan().sum() == len(removed)
    scores = stats.importance("confidence").raw
    assert all(scores[layer, head] == 0 for layer, head in removed)
    assert (scores[0, [0, 2, 3]] > 0).all()


def test_uniform_head_has_zero_focus_and_entropy_ln_keys():
    """Hand-checked: a head with zero query weights scores every key alike, so its
    attention is uniform over the real keys: entropy ln K, focus 0, confidence 1/K."""
    model = make_model("bert", dtype=torch.float64)
    block = attention_blocks(model)[0]
    d = head_layout(model).head_dim
    with torch.no_grad():
        block.attention.query.weight[2 * d:3 * d] = 0
        block.attention.query.bias[2 * d:3 * d] = 0
    batch = classification_batch(model, batch_size=4, seq_len=8, pad_last=3)
    keys = batch["attention_mask"].sum(dim=1).double()  # 8, 8, 8, 5 real tokens
    stats = attention_statistics(model, [batch])
    assert stats.entropy[0, 2].item() == pytest.approx(keys.log().mean().item(), rel=1e-9)
    assert stats.focus[0, 2].item() == pytest.approx(0.0, abs=1e-9)
    assert stats.confidence[0, 2].item() == pytest.approx((1 / keys).mean().item(), rel=1e-9)
    focus = estimate_importance(model, [batch], "classification", "entropy").raw
    assert focus[0, 2] == focus[0].min() and (focus[0, [0, 1, 3]] > 1e-3).all()


# --------------------------------------------------------------------------- magnitude


def explicit_magnitude(model):
    """Each head's Frobenius norm as the weights (matrices: biases and DeBERTa's per-head
    bias vectors excluded) that removing that head alone takes out of its layer: whatever
    the family's per-head layout (fused, interleaved, relative-position rows)."""
    layout = head_layout(model)
    scores = torch.zeros(layout.num_distinct_layers, layout.num_heads, dtype=torch.float64)

    def squares(candidate, layer):  # every weight matrix of the layer
        return sum(float(p.detach().double().pow(2).sum())
                   for p in distinct_layers(candidate)[layer].parameters() if p.dim() == 2)

    for layer, kept in enumerate(layout.kept):
        for head in kept:
            alone = remove_heads(copy.deepcopy(model), [(layer, head)])
            scores[layer, head] = math.sqrt(squares(model, layer) - squares(alone, layer))
    return scores


@pytest.mark.parametrize("family", FAMILIES)
def test_magnitude_equals_explicit_slices(family):
    model = make_model(family)
    result = estimate_importance(model, None, "classification", "magnitude")
    assert result.num_examples == 0 and math.isnan(result.mean_loss)
    assert_close(result.raw.double(), explicit_magnitude(model), rtol=1e-6, atol=0)
    if family == "albert":
        per_application = magnitude_importance(model, shared=False).raw
        assert per_application.shape == (3, 4)
        assert_close(per_application, result.raw.expand(3, -1))


def test_magnitude_of_a_pruned_model():
    removed = [(0, 0), (0, 3), (1, 1)]
    model = make_model("roberta")
    before = magnitude_importance(model).raw
    remove_heads(model, removed)
    after = magnitude_importance(model).raw
    assert_close(after.double(), explicit_magnitude(model), rtol=1e-6, atol=0)
    for layer, head in removed:
        assert after[layer, head] == 0
        before[layer, head] = 0
    assert_close(after, before)  # the kept heads' weights did not change


def test_magnitude_on_a_hand_computed_case():
    """Layer 0 of a BERT (hidden 32, 4 heads of 8): query weights 1, key 2, value 0,
    output 3 everywhere; each head: sqrt(8*32*1 + 8*32*4 + 0 + 32*8*9) = sqrt(3584)."""
    model = make_model("bert")
    block = attention_blocks(model)[0]
    with torch.no_grad():
        block.attention.query.weight.fill_(1)
        block.attention.key.weight.fill_(2)
        block.attention.value.weight.fill_(0)
        block.output.weight.fill_(3)
        block.attention.query.bias.fill_(100)  # biases are excluded
    raw = magnitude_importance(model).raw
    assert_close(raw[0], torch.full((4,), math.sqrt(3584.0)))


# --------------------------------------------------------------------------- convention


def test_higher_is_more_important_on_a_dead_head():
    """A head whose value rows (weights and bias) are zero contributes nothing: removing it
    changes no loss (ablation 0, gradient 0) and its weights are smaller."""
    model = make_model("bert", dtype=torch.float64)
    block = attention_blocks(model)[1]
    d = head_layout(model).head_dim
    with torch.no_grad():
        block.attention.value.weight[d:2 * d] = 0
        block.attention.value.bias[d:2 * d] = 0
    batches = uneven(classification_batch(model))
    ablation = ablation_importance(model, batches, "classification", heads_per_pass=3).raw
    gradient = estimate_importance(model, batches, "classification", "gradient").raw
    magnitude = estimate_importance(model, batches, "classification", "magnitude").raw
    assert abs(ablation[1, 1]) < 1e-12 and gradient[1, 1] < 1e-12
    others = [(layer, head) for layer in range(2) for head in range(4) if (layer, head) != (1, 1)]
    assert min(abs(float(ablation[i])) for i in others) > 1e-4
    assert min(float(gradient[i]) for i in others) > 1e-4
    assert magnitude[1, 1] < magnitude[1, [0, 2, 3]].min()
    assert_close(gradient, head_importance(model, batches, "classification").raw)


def test_bad_options_are_config_errors():
    model = make_model("bert")
    batch = classification_batch(model)
    with pytest.raises(ConfigError, match="^Unknown estimator 'fisher'. Allowed: gradient, "
                                          "ablation, entropy, confidence, magnitude$"):
        estimate_importance(model, [batch], "classification", "fisher")
    with pytest.raises(ConfigError, match="--heads-per-pass 0 must be at least 1"):
        estimate_importance(model, [batch], "classification", "ablation", heads_per_pass=0)
    for estimator in ESTIMATORS:
        with pytest.raises(ConfigError, match="shared=True needs .*ALBERT"):
            estimate_importance(model, [batch], "classification", estimator, shared=True)
    with pytest.raises(ConfigError, match="no batches"):
        estimate_importance(model, [], "classification", "ablation")
    with pytest.raises(ConfigError, match="needs batches"):
        estimate_importance(model, None, "classification", "entropy")


def test_estimators_leave_the_model_as_it_was():
    model = make_model("albert")
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    batch = classification_batch(model)
    for estimator in ESTIMATORS:
        estimate_importance(model, [batch], "classification", estimator)
        assert model.training
        assert model.config._attn_implementation == "sdpa"
        assert [p.requires_grad for p in model.parameters()] == flags
        assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks)
                   for m in model.modules()) == 0


# --------------------------------------------------------------------------- CLI


def run_importance(capsys, checkpoint, glue_dir, out, *extra):
    code = main([str(a) for a in (
        "importance", checkpoint, "--task", "sst2", "--data-dir", glue_dir, "--split", "dev",
        "--max-examples", 8, "--max-length", 32, "--batch-size", 4, "--device", "cpu",
        "--quiet", "--out", out, *extra)])
    return code, *capsys.readouterr()


def test_cli_ablation_writes_scores_json(capsys, checkpoints, glue_dir, tmp_path):
    from headcount.jobs.prepared import DataOptions, load_for_task, prepare_for

    out = tmp_path / "scores.json"
    code, _, err = run_importance(capsys, checkpoints["cls2"], glue_dir, out,
                                  "--estimator", "ablation", "--heads-per-pass", 3)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["estimator"] == "ablation" and record["num_examples"] == 8
    options = DataOptions("sst2", data_dir=str(glue_dir), split="dev", max_examples=8,
                          batch_size=4, max_length=32)
    task = options.resolve()
    loaded = load_for_task(str(checkpoints["cls2"]), task, device="cpu")
    batches = list(prepare_for(loaded, task, options).batches(4))
    expected = brute_force_ablation(loaded.model, batches, "classification")
    assert_close(torch.tensor(record["raw_scores"]).double(), expected, rtol=1e-4, atol=1e-6)
    assert record["mean_loss"] == pytest.approx(mean_loss(loaded.model, batches,
                                                          "classification"), rel=1e-5)

    out = tmp_path / "entropy.json"
    code, _, err = run_importance(capsys, checkpoints["cls2"], glue_dir, out,
                                  "--estimator", "entropy", "--normalize", "none")
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["estimator"] == "entropy"
    stats = attention_statistics(loaded.model, batches)
    assert_close(torch.tensor(record["entropy_nats"]).double(), stats.entropy, rtol=1e-5,
                 atol=1e-6)
    assert_close(torch.tensor(record["scores"]).double(), stats.focus, rtol=1e-5, atol=1e-6)

    out = tmp_path / "magnitude.json"
    code, _, err = run_importance(capsys, checkpoints["cls2"], glue_dir, out,
                                  "--estimator", "magnitude")
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["mean_loss"] is None and record["num_examples"] == 0
    assert_close(torch.tensor(record["raw_scores"]).double(),
                 explicit_magnitude(loaded.model), rtol=1e-6, atol=0)


def test_cli_unknown_estimator_is_one_line(capsys, checkpoints, glue_dir, tmp_path):
    out = tmp_path / "scores.json"
    code, _, err = run_importance(capsys, checkpoints["cls2"], glue_dir, out,
                                  "--estimator", "fisher")
    assert code == 2
    assert err == ("headcount: error: Unknown estimator 'fisher'. Allowed: gradient, "
                   "ablation, entropy, confidence, magnitude\n")
    assert not out.exists()
