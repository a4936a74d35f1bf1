"""Attention (JS) and feature (L2) drift between two models; `compare` and `plot drift`.

Tiny random models of conftest; the references are hand computations and a per-example,
per-token loop over transformers' own `output_attentions`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    FAMILIES,
    make_config,
    make_model,
    random_batch,
    save_checkpoint,
    write_tokenizer,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from headcount.checkpoints import save_pruned
from headcount.cli import build_parser
from headcount.drift import attention_drift, check_same_shape, js_divergence
from headcount.errors import HeadcountError, UnsupportedModelError
from headcount.jobs.analysis import drift_job
from headcount.jobs.prepared import DataOptions
from headcount.removal import remove_heads

FAST = ["--max-length", "32", "--batch-size", "4", "--device", "cpu", "--quiet"]


def parse(*argv):
    return build_parser().parse_args([str(arg) for arg in argv])


def run(*argv):
    args = parse(*argv)
    args.run(args)


# --------------------------------------------------------------------------- JS divergence


def test_js_of_hand_built_pair_matches_hand_computation():
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    m = [0.75, 0.25]
    expected = 0.5 * (1 * math.log2(1 / m[0])) + 0.5 * (
        0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1]))
    assert js_divergence(p, q).item() == pytest.approx(expected, abs=1e-7)
    assert js_divergence(q, p).item() == pytest.approx(expected, abs=1e-7)


def test_js_bounds_symmetry_identity_and_disjoint_supports():
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(50, 7, generator=generator, dtype=torch.float64), -1)
    q = torch.softmax(3 * torch.randn(50, 7, generator=generator, dtype=torch.float64), -1)
    p[:10, :3] = 0  # zeros in one distribution only
    p = p / p.sum(-1, keepdim=True)
    js = js_divergence(p, q)
    assert js.shape == (50,)
    assert (js >= 0).all() and (js <= 1).all()
    torch.testing.assert_close(js, js_divergence(q, p), rtol=0, atol=1e-15)
    assert (js_divergence(p, p) == 0).all()  # exactly, zeros included
    disjoint = js_divergence(torch.tensor([0.3, 0.7, 0.0, 0.0]), torch.tensor([0, 0, 0.4, 0.6]))
    assert disjoint.item() == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- batched drift


def texts_of_lengths(lengths, seed=3):
    """Unpadded examples (lists of token ids) of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 128, (n,), generator=generator).tolist() for n in lengths]


def collate(examples, width=None):
    width = width or max(map(len, examples))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in examples])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in examples])
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", FAMILIES)
def test_model_against_itself_is_exactly_zero(family):
    model = make_model(family, attn="eager")
    drift = attention_drift(model, model, [random_batch(model), random_batch(model, seed=2)])
    layers = 3 if family == "albert" else 2
    assert drift.js.shape == (layers, 4) and drift.l2.shape == (layers,)
    assert (drift.js == 0).all() and (drift.l2 == 0).all() and drift.l2_embeddings == 0
    assert drift.num_examples == 6


def test_two_loaded_copies_are_exactly_zero(tmp_path):
    path = save_checkpoint(tmp_path / "a", head="mlm")
    record = drift_job(str(path), str(path), DataOptions(
        "file:" + str(write_tsv(tmp_path / "t.tsv")), text_column="text", label_column="label",
        batch_size=2, max_length=16), device="cpu")
    assert all(v == 0 for row in record["js"] for v in row)
    assert record["l2"] == [0.0, 0.0] and record["l2_embeddings"] == 0.0


@pytest.mark.parametrize("family", ["bert", "albert", "deberta", "deberta-v2", "modernbert",
                                    "mpnet"])
def test_padding_does_not_change_the_result(family):
    a = make_model(family, attn="eager")
    b = make_model(family, attn="eager", head="mlm", seed=1)
    examples = texts_of_lengths([5, 9, 3])
    alone = attention_drift(a, b, [collate([row]) for row in examples])
    padded = attention_drift(a, b, [collate(examples, width=20)])
    with_longer = attention_drift(a, b, [collate(examples[:1]), collate(examples[1:])])
    for other in (padded, with_longer):
        torch.testing.assert_close(other.js, alone.js, rtol=0, atol=1e-6)
        torch.testing.assert_close(other.l2, alone.l2, rtol=0, atol=1e-5)
        assert other.l2_embeddings == pytest.approx(alone.l2_embeddings, abs=1e-5)
    assert (alone.js > 0).all()


def brute_force(a, b, examples):
    """Per example (unpadded, alone), per head, per query token: JS with math.log2 over
    transformers' own output_attentions; L2 per token of output_hidden_states."""
    layers = len(a.base_model(**collate(examples[:1]), output_attentions=True).attentions)
    heads = a.config.num_attention_heads if hasattr(a.config, "num_attention_heads") \
        else a.config.n_heads
    js = [[0.0] * heads for _ in range(layers)]
    l2 = [0.0] * (layers + 1)
    for example in examples:
        batch = collate([example])
        outputs = [m.base_model(**batch, output_attentions=True, output_hidden_states=True)
                   for m in (a, b)]
        n = len(example)
        for layer in range(layers):
            for head in range(heads):
                total = 0.0
                for token in range(n):
                    p = outputs[0].attentions[layer][0, head, token].tolist()
                    q = outputs[1].attentions[layer][0, head, token].tolist()
                    value = 0.0
                    for pk, qk in zip(p, q, strict=True):
                        mk = (pk + qk) / 2
                        value += 0.5 * (pk * math.log2(pk / mk) if pk > 0 else 0.0)
                        value += 0.5 * (qk * math.log2(qk / mk) if qk > 0 else 0.0)
                    total += value
                js[layer][head] += total / n / len(examples)
        for index in range(layers + 1):
            diff = outputs[0].hidden_states[index][0] - outputs[1].hidden_states[index][0]
            l2[index] += sum(row.norm().item() for row in diff.double()) / n / len(examples)
    return torch.tensor(js, dtype=torch.float64), torch.tensor(l2, dtype=torch.float64)


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert"])
def test_batched_result_equals_brute_force_loop(family):
    a = make_model(family, attn="eager")
    b = make_model(family, attn="eager", seed=1)
    examples = texts_of_lengths([6, 4, 8, 3], seed=5)
    with torch.inference_mode():
        js, l2 = brute_force(a, b, examples)
    drift = attention_drift(a, b, [collate(examples[:3]), collate(examples[3:], width=11)])
    torch.testing.assert_close(drift.js, js, rtol=0, atol=1e-6)
    torch.testing.assert_close(drift.l2, l2[1:], rtol=1e-6, atol=1e-5)
    assert drift.l2_embeddings == pytest.approx(l2[0].item(), abs=1e-5)
    assert drift.js_layer_mean() == pytest.approx(js.mean(dim=1).tolist())
    assert drift.js_layer_max() == pytest.approx(js.max(dim=1).values.tolist())


def test_sdpa_models_are_refused():
    a = make_model("bert")  # SDPA computes no attention probabilities
    with pytest.raises(UnsupportedModelError, match="eager"):
        attention_drift(a, a, [random_batch(a)])


# --------------------------------------------------------------------------- shapes


def model_from(family="bert", *, attn="eager", **overrides):
    torch.manual_seed(0)
    config = make_config(family, **overrides)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)


@pytest.mark.parametrize(("other", "message"), [
    (dict(num_attention_heads=2), "heads per layer 4 vs 2"),
    (dict(num_hidden_layers=3), "layers 2 vs 3"),
    (dict(hidden_size=16, num_attention_heads=4), "hidden size 32 vs 16"),
])
def test_models_of_different_shapes_are_refused(other, message):
    with pytest.raises(HeadcountError, match=message):
        attention_drift(model_from(), model_from(**other), [])


def test_different_families_and_different_pruning_are_refused():
    with pytest.raises(HeadcountError, match="family bert vs roberta"):
        check_same_shape(model_from(), model_from("roberta"))
    a, b = model_from(), model_from()
    remove_heads(a, [(1, 0)])
    remove_heads(b, [(1, 2)])
    with pytest.raises(HeadcountError, match=r"pruned differently\) in layer\(s\) 1"):
        check_same_shape(a, b, ("A", "B"))


def test_pruned_models_report_removed_heads_as_missing():
    a = make_model("bert", attn="eager")
    b = make_model("bert", attn="eager", seed=1)
    for model in (a, b):
        remove_heads(model, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 2)])
    drift = attention_drift(a, b, [random_batch(a)])
    assert drift.js[0].isnan().all()
    assert drift.js[1, 2].isnan() and not drift.js[1, [0, 1, 3]].isnan().any()
    assert drift.js_layer_mean()[0] is None and drift.js_layer_max()[0] is None
    assert drift.js_layer_mean()[1] == pytest.approx(drift.js[1, [0, 1, 3]].mean().item())
    assert torch.isfinite(drift.l2).all()


def test_pruned_checkpoints_load_with_eager_attention(tmp_path):
    paths = []
    for seed, head in ((1, "mlm"), (2, "classification")):
        model = make_model("albert", head=head, seed=seed)
        remove_heads(model, [(0, 1), (0, 3)])
        save_pruned(model, tmp_path / head, write_tokenizer(tmp_path / "tokenizer"))
        paths.append(str(tmp_path / head))
    options = DataOptions("file:" + str(write_tsv(tmp_path / "t.tsv")), text_column="text",
                          label_column="label", max_length=16)
    record = drift_job(*paths, options, device="cpu")
    assert [[v is None for v in row] for row in record["js"]] == [[False, True, False, True]] * 3
    same = drift_job(paths[0], paths[0], options, device="cpu")
    assert same["js"] == [[0.0, None, 0.0, None]] * 3 and same["js_layer_max"] == [0.0] * 3


# --------------------------------------------------------------------------- job and CLI


def write_tsv(path: Path) -> Path:
    rows = ["the movie was good", "a bad film", "what a great story and fun acting",
            "the cat sat on the mat", "boring"]
    path.write_text("text\tlabel\n" + "".join(f"{r}\t{i % 3}\n" for i, r in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    return {
        "mlm": save_checkpoint(root / "mlm", head="mlm", seed=1),
        "cls3": save_checkpoint(root / "cls3", num_labels=3, seed=2),
        "albert-mlm": save_checkpoint(root / "albert-mlm", "albert", head="mlm", seed=1),
        "albert-cls": save_checkpoint(root / "albert-cls", "albert", seed=2),
    }


def test_classifier_against_mlm_checkpoint_on_glue(pair, glue_dir):
    # A 3-label classifier first, on 2-label SST-2: labels are not used.
    record = drift_job(str(pair["cls3"]), str(pair["mlm"]), DataOptions(
        "sst2", data_dir=str(glue_dir), split="dev", max_examples=6, batch_size=4,
        max_length=24), device="cpu")
    assert record["num_examples"] == 6 and record["layers"] == 2 and record["heads"] == 4
    assert len(record["js"]) == 2 and all(len(row) == 4 for row in record["js"])
    assert all(0 < v <= 1 for row in record["js"] for v in row)
    assert record["js_layer_mean"] == pytest.approx([sum(r) / 4 for r in record["js"]])
    assert record["js_layer_max"] == pytest.approx([max(r) for r in record["js"]])
    assert len(record["l2"]) == 2 and record["l2_embeddings"] >= 0
    assert "then over examples" in record["averaging"]
    assert record["versions"]["transformers"]
    json.dumps(record, allow_nan=False)


def test_tokenizers_of_different_sizes_are_refused(pair, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(pair["mlm"], other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["zzzz"])
    tokenizer.save_pretrained(other)
    message = r"tokenizers differ: .*cls3 has 122 tokens, .*other has 123;"
    with pytest.raises(HeadcountError, match=message):
        drift_job(str(pair["cls3"]), str(other), DataOptions(
            "file:" + str(write_tsv(tmp_path / "t.tsv")), text_column="text",
            label_column="label", max_length=16), device="cpu")


def test_cli_compare_and_plot_drift(pair, tmp_path, capsys):
    data = ["--task", "file:" + str(write_tsv(tmp_path / "t.tsv")), "--text-column", "text",
            "--label-column", "label"]
    outs = []
    pairs = {"bert": ("mlm", "cls3"), "albert": ("albert-mlm", "albert-cls")}
    for name, (pre, fine) in pairs.items():
        out = tmp_path / f"{name}.json"
        run("compare", pair[pre], pair[fine], *data, *FAST, "--out", out)
        record = json.loads(out.read_text())
        assert record["pretrained"] == str(pair[pre]) and record["split"] == "dev"
        assert record["num_examples"] == 5
        outs.append(out)
    stdout = capsys.readouterr().out
    assert "wrote JS divergence of 2x4 heads" in stdout and "3x4 heads" in stdout
    albert = json.loads(outs[1].read_text())
    assert albert["shared_across_layers"] and len(albert["js"]) == 3
    figure = tmp_path / "drift.png"
    run("plot", "drift", *outs, "--out", figure)
    assert figure.stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_compare_user_mistakes(pair, tmp_path):
    with pytest.raises(HeadcountError, match="is a directory"):
        run("compare", pair["mlm"], pair["cls3"], "--task", "sst2", "--out", tmp_path)
    with pytest.raises(HeadcountError, match="--batch-size 0"):
        run("compare", pair["mlm"], pair["cls3"], "--task", "sst2", "--batch-size", "0",
            "--out", tmp_path / "d.json")
    with pytest.raises(HeadcountError, match="family bert vs albert"):
        run("compare", pair["mlm"], pair["albert-cls"], "--task",
            "file:" + str(write_tsv(tmp_path / "t.tsv")), "--text-column", "text",
            "--label-column", "label", *FAST, "--out", tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(HeadcountError, match="unsupported figure format '.jpg'"):
        run("plot", "drift", tmp_path / "missing.json", "--out", tmp_path / "f.jpg")
    with pytest.raises(HeadcountError, match="drift file not found"):
        run("plot", "drift", tmp_path / "missing.json", "--out", tmp_path / "f.png")


def test_compare_help_lists_data_options(capsys):
    with pytest.raises(SystemExit):
        parse("compare", "--help")
    text = capsys.readouterr().out
    for option in ("pretrained", "finetuned", "--task", "--data-dir", "--split", "--max-examples",
                   "--fraction", "--batch-size", "--max-length", "--seed", "--text-column",
                   "--text-pair-column", "--label-column", "--device", "--quiet", "--out"):
        assert option in text
    usage = text.split("\n\n")[0]
    assert usage.startswith("usage: headcount compare") and "model" not in usage
    assert parse("compare", "a", "b", "--task", "sst2", "--out", "x.json").split == "dev"
