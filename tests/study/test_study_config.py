"""Study configuration: defaults, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from headcount.errors import ConfigError
from headcount.study.config import load_config, parse_config
from headcount.study.units import task_options

MINIMAL = """
[study]
name = "mini"
seeds = [0, 1]

[[models]]
name = "m"
path = "some/checkpoint"

[[tasks]]
name = "rte"
task = "rte"

[pretrain]
text = "{text}"
"""


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    config = parse_config(MINIMAL.format(text=text))
    assert config.seeds == (0, 1)
    assert config.importance.normalizations == ("l1", "l2", "none")
    assert config.importance.fraction == 0.2
    assert config.pruning.step == 0.1 and config.pruning.schedule == "one-shot"
    assert config.analyses.freezing == (5,) and config.analyses.pruned_finetune == 0.5
    assert len(config.digest) == 16


def test_every_problem_is_reported_together_with_its_key():
    bad = """
[study]
name = "x"
seeds = [0, 0]
colour = "red"

[[models]]
name = "has space"
path = "p"
fit_mlm_head = "yes"

[[tasks]]
name = "t"
task = "mlm:text"

[pretrain]
text = "/no/such/text"

[finetune]
lr = -1
batch_size = 0

[importance]
normalizations = ["l3"]

[pruning]
schedule = "sometimes"
step = 1.5

[analyses]
freezing = [0]
pruned_finetune = 2.0
"""
    with pytest.raises(ConfigError) as error:
        parse_config(bad, "bad.toml")
    message = str(error.value)
    expected = [
        "study.seeds: [0, 0] repeats a seed",
        "study.colour: unknown key",
        "models[0].name: 'has space'",
        "models[0].fit_mlm_head: 'yes' is not true or false",
        "tasks[0].task: the masked-LM task is [pretrain].text",
        "pretrain.text: '/no/such/text' does not exist",
        "finetune.lr: -1.0 is not allowed; allowed: a positive number",
        "finetune.batch_size: 0 is not allowed; allowed: an integer >= 1",
        "importance.normalizations: ['l3']; allowed: a non-empty list of l1, l2, none",
        "pruning.schedule: 'sometimes' is not allowed; allowed: one-shot, iterative",
        "pruning.step: 1.5 is not allowed; allowed: a number in (0, 1]",
        "analyses.freezing: [0]",
        "analyses.pruned_finetune: 2.0 is not allowed",
    ]
    for line in expected:
        assert line in message, line
    assert message.startswith(f"bad.toml: {len(expected)} problems:")


def test_missing_sections_and_invalid_toml():
    with pytest.raises(ConfigError, match="models: at least one"):
        parse_config("[study]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[study\n")


def test_the_shipped_examples_parse_from_any_directory(monkeypatch, tmp_path):
    if not (REPO.parent / "shared" / "data" / "wikitext-2").is_dir():
        pytest.skip("shared data not beside the repository")
    monkeypatch.chdir(tmp_path)  # not the repository root: paths are read from examples/
    config = load_config(REPO / "examples" / "glue-local.toml")
    assert [t.name for t in config.tasks] == ["mrpc", "sst2"]
    glue = REPO.parent / "shared" / "data" / "glue"
    assert {Path(t.data_dir).resolve() for t in config.tasks} == {glue.resolve()}
    assert config.models[0].path == "sentence-transformers/all-MiniLM-L6-v2"  # a hub name
    wikipedia = REPO / "examples" / "data" / "wikipedia.txt"
    with pytest.raises(ConfigError, match=f"pretrain.text: '{wikipedia}' does not exist "
                                          r"\(a relative path in a config file is read"):
        load_config(REPO / "examples" / "paper.toml")  # needs a Wikipedia dump


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "data" / "glue").mkdir(parents=True)
    (folder / "data" / "text.txt").write_text("x")
    (folder / "ckpt").mkdir()
    (folder / "study.toml").write_text("""
[study]
name = "paths"

[[models]]
name = "local"
path = "ckpt"
mlm_path = "./mlm-ckpt"

[[models]]
name = "hub"
path = "org/model"

[[models]]
name = "absolute"
path = "/abs/ckpt"

[[tasks]]
name = "glue"
task = "sst2"
data_dir = "data/glue"

[[tasks]]
name = "mine"
task = "file:data/mine.tsv"
text_column = "text"
label_column = "label"

[pretrain]
text = "mlm:data/text.txt"
""")
    monkeypatch.chdir(tmp_path)
    config = load_config("configs/study.toml")
    local, hub, absolute = config.models
    assert (local.path, local.mlm_path) == (str(folder / "ckpt"), str(folder / "mlm-ckpt"))
    assert hub.path == "org/model" and absolute.path == "/abs/ckpt"
    glue, mine = config.tasks
    assert glue.task == "sst2" and glue.data_dir == str(folder / "data" / "glue")
    assert mine.task == f"file:{folder / 'data' / 'mine.tsv'}"
    assert config.pretrain.text == f"mlm:{folder / 'data' / 'text.txt'}"
    # The text as written stays the config of the run directory (its digest too).
    assert 'path = "ckpt"' in config.text
    # parse_config without a folder keeps paths as given (relative to the current one).
    monkeypatch.chdir(folder)
    assert parse_config(config.text).models[0].path == "ckpt"


def test_own_data_tasks_take_labels_and_problem(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    own = MINIMAL.format(text=text).replace('task = "rte"', """task = "file:mine.tsv"
text_column = "text"
label_column = "label"
labels = ["neg", "neutral", "pos"]
problem = "classification"
""")
    task = parse_config(own).tasks[0]
    assert task.labels == ("neg", "neutral", "pos") and task.problem == "classification"
    options = task_options(task, split="train")
    assert options.labels == task.labels and options.problem == "classification"
    assert parse_config(MINIMAL.format(text=text)).tasks[0].labels is None
    bad = MINIMAL.format(text=text).replace('task = "rte"', """task = "rte"
labels = ["a"]
problem = "ranking"
""")
    with pytest.raises(ConfigError) as error:
        parse_config(bad, "bad.toml")
    message = str(error.value)
    assert "tasks[0].labels: ['a']; allowed: a list of two or more distinct class names" in message
    assert "tasks[0].problem: 'ranking' is not allowed; allowed: classification, regression" \
        in message
    glue = MINIMAL.format(text=text).replace('task = "rte"', 'task = "rte"\nproblem = "regression"')
    with pytest.raises(ConfigError, match=r"tasks\[0\].problem: only for file: and dir: tasks"):
        parse_config(glue)


def test_companion_sections_are_off_when_absent_and_parsed_when_given(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    config = parse_config(MINIMAL.format(text=text))
    assert config.orders.names == () and config.orders.finetune == ()
    assert config.estimators.names == () and config.sparsity.levels == ()
    config = parse_config(MINIMAL.format(text=text) + """
[orders]
names = ["random", "top", "random"]
draws = 4
finetune = ["importance", "bottom"]
finetune_ratios = [0.5, 0.25]

[estimators]
names = ["ablation", "magnitude"]
max_examples = 64

[sparsity]
scope = "layer"
finetune_levels = [0.3, 0.9]
""")
    assert config.orders.names == ("random", "top") and config.orders.draws == 4
    assert config.orders.finetune == ("importance", "bottom")
    assert config.orders.finetune_ratios == (0.25, 0.5)
    assert config.estimators.names == ("ablation", "magnitude")
    assert config.estimators.max_examples == 64
    # a [sparsity] section without levels sweeps 0, 10%, ..., 90%
    assert config.sparsity.levels == tuple(round(0.1 * i, 1) for i in range(10))
    assert config.sparsity.scope == "layer"
    assert config.sparsity.levels_to_finetune == (0.3, 0.9)


def test_companion_section_problems_name_the_key_and_what_is_allowed(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    bad = MINIMAL.format(text=text) + """
[orders]
names = ["importance", "sideways"]
draws = 0
finetune_ratios = [1.0]

[estimators]
names = ["gradient", "vibes"]
curves = "yes"

[sparsity]
levels = [0.0, 1.0]
scope = "row"
"""
    with pytest.raises(ConfigError) as error:
        parse_config(bad, "bad.toml")
    message = str(error.value)
    for expected in (
        "orders.names: ['importance', 'sideways']; allowed: a list of random, top, bottom,",
        "orders.draws: 0 is not allowed; allowed: an integer >= 1",
        "orders.finetune_ratios: [1.0]; allowed: a list of ratios in (0, 1)",
        "estimators.names: ['gradient', 'vibes']; allowed: a list of ablation, entropy, "
        "confidence, magnitude",
        "estimators.curves: 'yes' is not true or false",
        "sparsity.levels: [0.0, 1.0]; allowed: a list of sparsities in [0, 1)",
        "sparsity.scope: 'row' is not allowed; allowed: global, layer",
    ):
        assert expected in message, expected
    assert message.startswith("bad.toml: 7 problems:")


def test_pruning_units_and_the_compress_section(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    config = parse_config(MINIMAL.format(text=text))
    assert config.pruning.units == "heads" and config.compress.budgets == ()
    config = parse_config(MINIMAL.format(text=text) + '\n[pruning]\nunits = "both"\n'
                          "\n[compress]\nseq_length = 64\n")
    assert config.pruning.units == "both"
    # a [compress] section without budgets means the default ones
    assert config.compress.budgets == (0.4, 0.6, 0.8) and config.compress.seq_length == 64
    bad = MINIMAL.format(text=text) + ('\n[pruning]\nunits = "layers"\n'
                                       "\n[compress]\nbudgets = [0.5, 1.2]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as error:
        parse_config(bad, "bad.toml")
    message = str(error.value)
    for expected in ("pruning.units: 'layers' is not allowed; allowed: heads, neurons, both",
                     "compress.budgets: [0.5, 1.2]; allowed: a list of shares of the FLOPs",
                     "compress.batch_size: 0 is not allowed"):
        assert expected in message, (expected, message)
