"""Pruned checkpoints that load anywhere: stock transformers without headcount, a
save_pretrained round trip, transformers-4 checkpoints, ONNX export, and the errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_model, random_batch, save_checkpoint, write_tokenizer
from torch.testing import assert_close

from headcount.checkpoints import save_pruned
from headcount.cli import main
from headcount.errors import HeadcountError
from headcount.jobs.checkpoint import export_job
from headcount.layouts import head_layout, neuron_layout
from headcount.models import load_model
from headcount.portable import MODELING_FILE
from headcount.removal import remove_heads, remove_units

# Per-layer counts differ; layer 1 keeps no head and no neuron (ALBERT: its one layer).
UNITS = {"heads": [(0, 1), (1, 0), (1, 1), (1, 2), (1, 3)],
         "neurons": [(0, i) for i in range(0, 37, 3)] + [(1, i) for i in range(37)]}
ALBERT_UNITS = {"heads": [(0, 1), (0, 2)], "neurons": [(0, i) for i in range(0, 37, 2)]}

# Run in a fresh interpreter whose import path holds no headcount: what a user of the
# checkpoint has. Reads a JSON list of jobs (directory, Auto class, batch, where to save or
# null) from the file named by argv[1]; prints the first output of each, as JSON.
STOCK = textwrap.dedent("""
    import json, os, sys
    sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p, "headcount"))]
    try:
        import headcount
    except ImportError:
        pass
    else:
        sys.exit("headcount is importable")
    import torch
    import transformers
    results = []
    for directory, auto, batch, save_to in json.load(open(sys.argv[1])):
        model = getattr(transformers, auto).from_pretrained(directory, trust_remote_code=True)
        batch = {k: torch.tensor(v) for k, v in batch.items()}
        with torch.no_grad():
            out = model.eval()(**batch)
        if save_to is not None:
            model.save_pretrained(save_to)
        results.append(next(iter(out.values())).tolist())
    print(json.dumps(results))
""")


def stock_outputs_of(jobs, scratch) -> list[torch.Tensor]:
    """Outputs of stock transformers, in one fresh interpreter, for each job
    (directory, Auto class name, batch, directory to save the loaded model to or None)."""
    scratch.mkdir(parents=True, exist_ok=True)
    listing = scratch / "jobs.json"
    listing.write_text(json.dumps([
        [str(directory), auto, {k: v.tolist() for k, v in batch.items()},
         None if save_to is None else str(save_to)]
        for directory, auto, batch, save_to in jobs]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", STOCK, str(listing)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return [torch.tensor(out) for out in json.loads(result.stdout.strip().splitlines()[-1])]


def stock_outputs(directory, batch, auto="AutoModelForSequenceClassification", save_to=None):
    return stock_outputs_of([(directory, auto, batch, save_to)], directory.parent / "stock")[0]


def pruned_checkpoint(tmp_path, family, head="classification"):
    model = make_model(family, head=head, num_labels=3)
    remove_units(model, ALBERT_UNITS if family == "albert" else UNITS)
    directory = tmp_path / family
    write_tokenizer(directory)
    save_pruned(model, directory)
    return model, directory


PORTABLE = ("bert", "distilbert", "albert", "roberta", "deberta", "deberta-v2", "modernbert",
            "mpnet", "roformer", "xlm-roberta-xl")
MASKED_LM = ("bert", "deberta", "deberta-v2", "modernbert", "mpnet")


@pytest.fixture(scope="module")
def stock_runs(tmp_path_factory):
    """Pruned checkpoints of every family (a 3-label classifier; for MASKED_LM also a
    masked LM, loaded as such and as the bare encoder), run by stock transformers in one
    interpreter: (family, kind) -> (model, directory, expected output, stock output)."""
    root = tmp_path_factory.mktemp("portable")
    cases, jobs = {}, []
    for family in PORTABLE:
        for kind in ("classification", "mlm", "encoder"):
            if kind != "classification" and family not in MASKED_LM:
                continue
            if kind == "encoder":
                model, directory = cases[(family, "mlm")][:2]
                auto = "AutoModel"
            else:
                model, directory = pruned_checkpoint(root / kind, family, head=kind)
                auto = ("AutoModelForMaskedLM" if kind == "mlm"
                        else "AutoModelForSequenceClassification")
            batch = random_batch(model)
            with torch.no_grad():
                expected = (model.base_model(**batch).last_hidden_state if kind == "encoder"
                            else model(**batch).logits)
            cases[(family, kind)] = (model, directory, expected, batch)
            jobs.append((directory, auto, batch, None))
    outputs = stock_outputs_of(jobs, root / "stock")
    return {key: (*case[:3], output)
            for (key, case), output in zip(cases.items(), outputs, strict=True)}


@pytest.mark.parametrize("family", PORTABLE)
def test_stock_transformers_loads_a_pruned_checkpoint_without_headcount(stock_runs, family):
    model, directory, expected, stock = stock_runs[(family, "classification")]
    batch = random_batch(model)
    ours = load_model(str(directory), "checkpoint", device="cpu").model
    assert_close(ours(**batch).logits, expected, rtol=0, atol=0)
    assert_close(stock, expected, rtol=1e-5, atol=1e-5)
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith(
        "modeling_headcount.")
    assert (directory / MODELING_FILE).is_file()


@pytest.mark.parametrize("family", MASKED_LM)
def test_the_bare_encoder_and_the_masked_lm_load_too(stock_runs, family):
    for kind in ("mlm", "encoder"):
        _, _, expected, stock = stock_runs[(family, kind)]
        assert_close(stock, expected, rtol=1e-5, atol=1e-5)


def test_save_pretrained_of_a_stock_loaded_model_round_trips(tmp_path):
    model, directory = pruned_checkpoint(tmp_path, "bert")
    batch = random_batch(model)
    again = tmp_path / "again"
    first = stock_outputs(directory, batch, save_to=again)
    assert (again / MODELING_FILE).is_file()
    assert_close(stock_outputs(again, batch), first, rtol=0, atol=0)
    write_tokenizer(again)
    reloaded = load_model(str(again), "checkpoint", device="cpu").model
    assert head_layout(reloaded).kept == head_layout(model).kept
    assert neuron_layout(reloaded).kept == neuron_layout(model).kept


def test_an_unpruned_checkpoint_stays_an_ordinary_one(tmp_path):
    directory = tmp_path / "plain"
    save_pruned(make_model("bert"), directory)
    assert not (directory / MODELING_FILE).exists()
    assert "auto_map" not in json.loads((directory / "config.json").read_text())


def transformers4_checkpoint(tmp_path):
    """What transformers 4's prune_heads saved: smaller attention weights, the removed
    heads in config.pruned_heads, and no headcount layout."""
    model = make_model("bert", num_labels=3)
    removed = {0: [1, 3], 1: [0]}
    remove_heads(model, [(layer, head) for layer, heads in removed.items() for head in heads])
    del model.config.headcount_kept_heads
    model.config.pruned_heads = removed
    directory = tmp_path / "v4"
    model.save_pretrained(directory)
    write_tokenizer(directory)
    config = json.loads((directory / "config.json").read_text())
    assert config["pruned_heads"] == {"0": [1, 3], "1": [0]}
    assert "headcount_kept_heads" not in config
    return model, directory


def test_a_transformers4_pruned_checkpoint_loads_and_migrates(tmp_path, capsys):
    model, directory = transformers4_checkpoint(tmp_path)
    batch = random_batch(model)
    loaded = load_model(str(directory), "checkpoint", device="cpu").model
    assert head_layout(loaded).kept == ((0, 2), (1, 2, 3))
    assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    out = tmp_path / "portable"
    assert main(["migrate", str(directory), "--out", str(out)]) == 0
    assert "5 heads kept" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["headcount_kept_heads"] == [[0, 2], [1, 2, 3]] and not config["pruned_heads"]
    assert_close(stock_outputs(out, batch), model(**batch).logits, rtol=1e-5, atol=1e-5)


def test_migrate_refuses_a_checkpoint_without_pruned_heads(checkpoints, tmp_path, capsys):
    assert main(["migrate", str(checkpoints["cls2"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no pruned_heads in its config" in err


def test_a_neuron_layout_that_does_not_match_the_weights_is_refused(tmp_path):
    _, directory = pruned_checkpoint(tmp_path, "bert")
    config = json.loads((directory / "config.json").read_text())
    config["headcount_kept_neurons"][0] = config["headcount_kept_neurons"][0][:-1]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadcountError, match=r"does not match the weights: .*intermediate"):
        load_model(str(directory), "checkpoint", device="cpu")


@pytest.mark.parametrize("family", ["bert", "albert", "modernbert", "mpnet"])
def test_export_writes_an_onnx_graph_equal_to_pytorch(tmp_path, family):
    model, directory = pruned_checkpoint(tmp_path, family)
    record = export_job(str(directory), tmp_path / "model.onnx", exporter="torchscript")
    assert record["max_abs_diff"] < 1e-4
    # one self-contained file: the weights (float32) are inside it, not beside it
    parameters = sum(p.numel() for p in model.parameters())
    assert (tmp_path / "model.onnx").stat().st_size > 4 * parameters
    assert record["heads_remaining"] == head_layout(model).heads_remaining
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_export_cli_with_the_default_exporter(tmp_path, capsys):
    _, directory = pruned_checkpoint(tmp_path, "distilbert")
    out = tmp_path / "d.onnx"
    assert main(["export", str(directory), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}") and "onnxruntime vs PyTorch max abs difference" in line


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "model directory not found"),
    ("empty", "is not a checkpoint: it has no config.json"),
])
def test_export_of_something_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, target,
                                                                   message):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / target), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_scores_file_of_the_wrong_kind_is_refused(checkpoints, glue_dir, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    data = ["--task", "sst2", "--data-dir", str(glue_dir), "--max-examples", "8",
            "--max-length", "16", "--device", "cpu", "--quiet"]
    assert main(["importance", str(checkpoints["cls2"]), *data, "--out", str(scores)]) == 0
    record = json.loads(scores.read_text())
    assert record["units"] == "heads" and "neuron_raw_scores" not in record
    code = main(["prune", str(checkpoints["cls2"]), "--scores", str(scores), "--units",
                 "neurons", "--ratio", "0.5", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "holds heads scores, not neurons scores" in err
    both = tmp_path / "both.json"
    assert main(["importance", str(checkpoints["cls2"]), *data, "--units", "both",
                 "--out", str(both)]) == 0
    record = json.loads(both.read_text())
    assert len(record["neuron_raw_scores"]) == 2 and len(record["neuron_raw_scores"][0]) == 37
    out = tmp_path / "pruned"
    assert main(["prune", str(checkpoints["cls2"]), "--scores", str(both), "--units", "both",
                 "--ratio", "0.5", "--out", str(out)]) == 0
    assert "removed 4 heads (4 left) and 37 neurons (37 left)" in capsys.readouterr().out
    loaded = load_model(str(out), "checkpoint", device="cpu").model
    assert neuron_layout(loaded).neurons_remaining == 37


def test_unknown_units_are_one_line(checkpoints, glue_dir, tmp_path, capsys):
    code = main(["curve", str(checkpoints["cls2"]), "--task", "sst2", "--data-dir",
                 str(glue_dir), "--units", "layers", "--out", str(tmp_path / "c.csv")])
    assert code == 2
    assert "Unknown units 'layers'. Allowed: heads, neurons, both" in capsys.readouterr().err


def test_saved_model_loads_with_its_neuron_layout(tmp_path):
    directory = save_checkpoint(tmp_path / "base")
    model = load_model(str(directory), "checkpoint", device="cpu").model
    remove_units(model, {"neurons": [(0, 0), (1, 5)]})
    save_pruned(model, tmp_path / "again")
    heads_json = json.loads((tmp_path / "again" / "heads.json").read_text())
    assert heads_json["neurons_kept_per_layer"] == [36, 36]
