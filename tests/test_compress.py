"""`compress`: the mask Fisher, the search under a budget, rearrangement, tuning, the job."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from conftest import classification_batch, make_model, random_batch, save_checkpoint
from torch.testing import assert_close

from headcount.cli import main
from headcount.cost import encoder_cost, unit_prices
from headcount.errors import ConfigError
from headcount.fisher import mask_fisher
from headcount.gates import gate_heads, gate_neurons
from headcount.latency import LatencyTable, fit_piecewise, latency_prices, measure_speedup
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Budget, Prices, search_masks
from headcount.rearrange import pruning_penalty, rearrange, rearrange_layer
from headcount.removal import remove_units
from headcount.tuning import fold_scales, tune_masks

# --------------------------------------------------------------------------- Fisher


def test_per_example_fisher_equals_a_one_example_loop():
    model = make_model("bert", dtype=torch.float64)
    batch = classification_batch(model, batch_size=5)
    fisher = mask_fisher(model, [batch], "classification")
    expected = {"heads": torch.zeros(2, 4, 4, dtype=torch.float64),
                "neurons": torch.zeros(2, 37, 37, dtype=torch.float64)}
    for i in range(5):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        gates = {"heads": torch.ones(2, 4, dtype=torch.float64, requires_grad=True),
                 "neurons": torch.ones(2, 37, dtype=torch.float64, requires_grad=True)}
        with gate_heads(model, gates["heads"]), gate_neurons(model, gates["neurons"]):
            logits = model(**{k: v for k, v in one.items() if k != "labels"}).logits
        loss = torch.nn.functional.cross_entropy(logits, one["labels"])
        grads = torch.autograd.grad(loss, [gates["heads"], gates["neurons"]])
        for kind, g in zip(("heads", "neurons"), grads, strict=True):
            expected[kind] += torch.einsum("lu,lv->luv", g, g)
    for kind in ("heads", "neurons"):
        assert_close(fisher.blocks[kind].double(), expected[kind] / 5, rtol=1e-4, atol=1e-10)
        assert_close(fisher.diagonal[kind], torch.diagonal(expected[kind] / 5, dim1=1, dim2=2),
                     rtol=1e-6, atol=1e-12)
    assert fisher.count == 5 and fisher.per_example


def test_batch_fisher_squares_the_summed_gradient():
    model = make_model("bert", dtype=torch.float64)
    batches = [classification_batch(model, batch_size=4, seed=s) for s in (1, 2)]
    exact = mask_fisher(model, batches, "classification", units=("heads",))
    summed = mask_fisher(model, batches, "classification", units=("heads",),
                         per_example=False)
    assert summed.count == 2 and not summed.per_example
    assert not torch.allclose(exact.diagonal["heads"], summed.diagonal["heads"])


def test_albert_has_no_per_layer_masks():
    model = make_model("albert")
    with pytest.raises(ConfigError, match="ALBERT's layers share"):
        mask_fisher(model, [classification_batch(model)], "classification")


# --------------------------------------------------------------------------- search


def brute_force(diagonal, present, prices, fraction):
    """The best total Fisher of any set of units whose cost is within the budget."""
    units = [("heads", u) for u in itertools.chain.from_iterable(
        [(layer, h) for h in heads] for layer, heads in enumerate(present["heads"]))]
    units += [("neurons", u) for u in itertools.chain.from_iterable(
        [(layer, n) for n in neurons] for layer, neurons in enumerate(present["neurons"]))]
    best = 0.0
    for mask in itertools.product((0, 1), repeat=len(units)):
        chosen = [unit for unit, keep in zip(units, mask, strict=True) if keep]
        cost = prices.fixed + sum(prices.head if kind == "heads" else prices.neuron
                                  for kind, _ in chosen)
        if cost <= fraction * prices.full + 1e-9:
            best = max(best, sum(float(diagonal[kind][u]) for kind, u in chosen))
    return best


@pytest.mark.parametrize("fraction", [0.15, 0.4, 0.62, 0.9, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_is_optimal_and_within_the_budget_on_a_brute_forced_case(fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    diagonal = {"heads": torch.rand(2, 2, generator=generator),
                "neurons": torch.rand(2, 4, generator=generator)}
    present = {"heads": [[0, 1], [0, 1]], "neurons": [[0, 1, 2, 3], [0, 1, 2, 3]]}
    prices = Prices(head=7.0, neuron=3.0, full=4 * 7.0 + 8 * 3.0 + 2.0, fixed=2.0)
    result = search_masks(diagonal, present, prices, fraction)
    assert result.cost <= fraction * prices.full + 1e-9
    assert result.importance == pytest.approx(brute_force(diagonal, present, prices, fraction))


@pytest.mark.parametrize("family", ["bert", "modernbert", "deberta"])
@pytest.mark.parametrize("kind", ["flops", "params"])
def test_the_kept_model_is_within_a_flops_or_parameter_budget(kind, family):
    model = make_model(family)
    fisher = mask_fisher(model, [classification_batch(model)], "classification")
    prices = unit_prices(model, 16, kind)
    present = {"heads": [list(k) for k in head_layout(model).kept],
               "neurons": [list(k) for k in neuron_layout(model).kept]}
    for fraction in (0.3, 0.6, 0.9):
        kept = search_masks(fisher.diagonal, present, prices, fraction).kept
        pruned = remove_units(copy.deepcopy(model), {
            "heads": [(layer, h) for layer in range(2) for h in range(4)
                      if (layer, h) not in kept["heads"]],
            "neurons": [(layer, n) for layer in range(2) for n in range(37)
                        if (layer, n) not in kept["neurons"]]})
        before, after = encoder_cost(model, 16), encoder_cost(pruned, 16)
        measured = after.macs / before.macs if kind == "flops" else \
            after.parameters / before.parameters
        assert measured <= fraction + 1e-9


def test_budgets_are_parsed_with_one_line_errors():
    assert Budget.parse("flops=0.6") == Budget("flops", 0.6)
    for text, message in [("energy=0.5", "Unknown budget kind 'energy'"),
                          ("flops=1.5", "outside \\(0, 1\\]"), ("flops=0", "outside"),
                          ("flops", "give KIND=FRACTION"), ("params=half", "not a number")]:
        with pytest.raises(ConfigError, match=message):
            Budget.parse(text)


# --------------------------------------------------------------------------- rearrange


def test_rearrangement_keeps_each_layers_counts_and_lowers_the_penalty():
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(3, 10, 40, generator=generator)  # [layers, units, examples]
    g[:, :3] += g[:, 3:6]  # units that stand in for each other
    blocks = torch.einsum("lue,lve->luv", g, g) / 40
    present = [list(range(10))] * 3
    kept = [(layer, u) for layer in range(3) for u in (5, 6, 7, 8, 9)]
    rearranged = rearrange(blocks, kept, present)
    for layer in range(3):
        old = [u for l_, u in kept if l_ == layer]
        new = [u for l_, u in rearranged if l_ == layer]
        assert len(new) == len(old) == 5
        pruned_old = [u for u in range(10) if u not in old]
        pruned_new = [u for u in range(10) if u not in new]
        assert pruning_penalty(blocks[layer], pruned_new) <= \
            pruning_penalty(blocks[layer], pruned_old) + 1e-9


def test_rearrangement_prunes_a_unit_that_cancels_a_small_one():
    # Units 2 and 3 have the smallest Fisher diagonal but add up; unit 0 cancels either of
    # them: pruning 0 with one of them costs far less than pruning 2 and 3.
    g = torch.tensor([[-0.6, 0.0], [0.0, 2.0], [0.5, 0.0], [0.5, 0.0]])  # [units, examples]
    block = g @ g.t()
    kept = rearrange_layer(block, kept=[0, 1], present=[0, 1, 2, 3])
    assert len(kept) == 2 and 1 in kept and 0 not in kept
    pruned = [u for u in range(4) if u not in kept]
    assert pruning_penalty(block, pruned) == pytest.approx(0.01)
    assert pruning_penalty(block, [2, 3]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- tuning


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "modernbert", "mpnet",
                                    "xlm-roberta-xl"])
def test_tuning_reduces_the_reconstruction_error_and_folding_equals_the_gates(family):
    model = make_model(family, dtype=torch.float64)
    batches = [classification_batch(model, batch_size=6, seed=s) for s in range(4)]
    heads = torch.ones(2, 4)
    heads[0, 1] = heads[1, 2] = 0
    neurons = torch.ones(2, 37)
    neurons[0, :15] = 0
    neurons[1, 10:30] = 0
    head_gates, neuron_gates, report = tune_masks(model, batches, heads, neurons)
    for before, after in ((report.attention_before, report.attention_after),
                          (report.ffn_before, report.ffn_after)):
        assert len(before) == len(after) == 2
        assert all(a <= b + 1e-12 for a, b in zip(after, before, strict=True))
    assert ((head_gates == 0) == (heads == 0)).all()
    assert ((neuron_gates == 0) == (neurons == 0)).all()
    batch = random_batch(model)
    with gate_heads(model, head_gates.double()), gate_neurons(model, neuron_gates.double()):
        expected = model(**batch).logits
    folded = fold_scales(copy.deepcopy(model), head_gates, neuron_gates)
    remove_units(folded, {"heads": [(0, 1), (1, 2)],
                          "neurons": [(0, n) for n in range(15)] +
                                     [(1, n) for n in range(10, 30)]})
    assert_close(folded(**batch).logits, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", ["bert", "modernbert", "xlm-roberta-xl"])
def test_the_feed_forward_residual_is_found_pre_and_post_layer_norm(family):
    """What tuning records as the feed-forward's residual stream is what the layer adds the
    feed-forward's output to: after the LayerNorm in post-LN BERT (`output.LayerNorm`),
    before the next norm in pre-LN ModernBERT and XLM-RoBERTa-XL (the layer's output)."""
    from headcount.arch import distinct_layers, feed_forwards
    from headcount.tuning import InputRecorder, recorded_inputs

    model = make_model(family, dtype=torch.float64)
    batch = random_batch(model)
    layer, ffn = distinct_layers(model)[1], feed_forwards(model)[1]
    inputs = InputRecorder(recorded_inputs(model, 1))
    outputs = []
    handle = layer.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        with torch.no_grad():
            model.base_model(**batch)
    finally:
        inputs.close()
        handle.remove()
    output = outputs[0][0] if isinstance(outputs[0], tuple) else outputs[0]
    with torch.no_grad():
        added = inputs.seen["residual"] + ffn.output(inputs.seen["activation"])
        if family == "bert":
            added = layer.output.LayerNorm(added)
    assert_close(added, output, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- latency


def synthetic_table(layers=2):
    # a(n) flat up to 1 head then 1 ms per head; f(m) flat up to 8 neurons then 0.1 ms each
    heads = [0.002] + [0.003 + 0.001 * max(n - 1, 0) for n in range(1, 5)]
    counts = [0, 8, 16, 24, 32, 37]
    neurons = [0.002] + [0.003 + 0.0001 * (m - 8) for m in counts[1:]]
    full = 0.001 + layers * (heads[-1] + neurons[-1] - 0.002)
    return LatencyTable(heads, counts, neurons, 0.002, full, layers, 8, 32, "cpu")


def test_latency_table_prediction_and_fit():
    table = synthetic_table()
    assert table.rest == pytest.approx(0.001)
    assert table.predict([4, 4], [37, 37]) == pytest.approx(table.full_model)
    assert table.neuron_time(12) == pytest.approx(0.003 + 0.0001 * 4)
    fit = fit_piecewise(list(range(5)), table.heads)
    assert (fit.threshold, fit.flat, fit.slope) == (1, pytest.approx(0.003),
                                                    pytest.approx(0.001))
    prices = latency_prices(table)
    assert prices.head == pytest.approx(0.001) and prices.neuron == pytest.approx(0.0001)
    assert (prices.base_heads, prices.base_neurons) == (1, 8)


def test_a_latency_search_keeps_the_prediction_within_the_budget():
    table = synthetic_table()
    prices = latency_prices(table)
    generator = torch.Generator().manual_seed(3)
    diagonal = {"heads": torch.rand(2, 4, generator=generator),
                "neurons": torch.rand(2, 37, generator=generator)}
    present = {"heads": [list(range(4))] * 2, "neurons": [list(range(37))] * 2}
    result = search_masks(diagonal, present, prices, 0.7)
    heads = [sum(1 for layer, _ in result.kept["heads"] if layer == i) for i in range(2)]
    neurons = [sum(1 for layer, _ in result.kept["neurons"] if layer == i) for i in range(2)]
    assert min(heads) >= 1 and min(neurons) >= 8  # every layer keeps the fitted thresholds
    assert table.predict(heads, neurons) <= 0.7 * table.full_model + 1e-12


def test_a_speed_up_is_timed_in_alternating_rounds():
    """Each round runs the variant, then the full model, on the same batch: a change in the
    machine's load between rounds hits both."""
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.config = name, make_model("bert").config

        def forward(self, input_ids, attention_mask):
            calls.append((self.name, tuple(input_ids.shape)))
            return input_ids

    full, variant = Recorder("full"), Recorder("variant")
    full.weight = torch.nn.Parameter(torch.zeros(1))  # a device to put the batch on
    times = measure_speedup(full, variant, batch_size=3, seq_length=5, rounds=4)
    assert all(t > 0 for t in times)
    assert [name for name, _ in calls] == ["variant", "full"] * 5  # warm-up, then 4 rounds
    assert {shape for _, shape in calls} == {(3, 5)}


# --------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("compress") / "model")


def compress_argv(checkpoint, glue_dir, out, *extra):
    return ["compress", str(checkpoint), "--task", "sst2", "--data-dir", str(glue_dir),
            "--max-examples", "32", "--max-length", "24", "--seq-length", "24",
            "--batch-size", "16", "--device", "cpu", "--quiet", *extra, "--out", str(out)]


def test_compress_writes_a_portable_checkpoint_within_the_budget(checkpoint, glue_dir,
                                                                 tmp_path, capsys):
    out = tmp_path / "compressed"
    assert main(compress_argv(checkpoint, glue_dir, out, "--budget", "flops=0.6")) == 0
    record = json.loads((out / "compress.json").read_text())
    assert record["flops_after"] <= 0.6 * record["flops_before"]
    assert set(record["seconds"]) >= {"fisher", "search", "rearrange", "tune"}
    assert record["eval"]["split"] == "dev" and record["eval"]["examples"] == 872
    assert (out / "modeling_headcount.py").is_file()
    line = capsys.readouterr().out
    assert "flops=0.6:" in line and f"wrote {out}" in line


@pytest.mark.parametrize(("extra", "message"), [
    (["--budget", "energy=0.5"], "Unknown budget kind 'energy'"),
    (["--budget", "flops=1.2"], "outside (0, 1]"),
    (["--budget", "flops=0.5", "--batch-size", "64"], "fewer than one batch of 64"),
    (["--budget", "flops=0.5", "--fisher", "diagonal"], "Unknown Fisher 'diagonal'"),
])
def test_bad_compress_input_is_one_line(checkpoint, glue_dir, tmp_path, capsys, extra,
                                        message):
    assert main(compress_argv(checkpoint, glue_dir, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_a_task_without_a_dev_split_needs_an_eval_split(checkpoint, tmp_path, capsys):
    data = tmp_path / "data.tsv"
    data.write_text("text\tlabel\n" + "".join(f"the movie {i}\t{i % 2}\n" for i in range(20)))
    code = main(["compress", str(checkpoint), "--task", f"file:{data}", "--text-column", "text",
                 "--label-column", "label", "--budget", "flops=0.5", "--device", "cpu",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "has no dev split to measure the metric before and after on: give --eval-split " \
        "or --eval-task" in capsys.readouterr().err


def test_albert_is_refused(tmp_path, glue_dir, capsys):
    albert = save_checkpoint(tmp_path / "albert", "albert")
    assert main(compress_argv(albert, glue_dir, tmp_path / "o", "--budget", "flops=0.5")) == 2
    assert "compress needs one set of weights per layer" in capsys.readouterr().err


def test_compare_job_measures_every_method_at_every_budget(checkpoint, glue_dir):
    from headcount.jobs.compress import METHODS, CompareRequest, compare_job
    from headcount.jobs.prepared import DataOptions

    options = DataOptions("sst2", data_dir=str(glue_dir), split="train")
    dev = DataOptions("sst2", data_dir=str(glue_dir), split="dev", max_examples=32,
                      max_length=24)
    rows = compare_job(str(checkpoint), options, dev,
                       CompareRequest(budgets=(0.7, 0.5), seq_length=24, batch_size=16,
                                      max_examples=32, latency=False), device="cpu")
    assert [(row["budget"], row["method"]) for row in rows] == \
        [(1.0, "unpruned")] + [(b, m) for b in (0.7, 0.5) for m in METHODS]
    for row in rows[1:]:
        if row["method"] != "heads-only":  # heads alone cannot always reach the budget
            assert row["flops_kept"] <= row["budget"] + 1e-9
        assert 0 <= row["relative"] and row["metric"] == "accuracy"
