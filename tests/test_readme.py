"""The README's own examples, run on tiny models and small data, so that an example that
stops working fails the tests.

The test reads README.md's fenced code blocks (not a copy of them):
- a `text` block whose lines start with `$ ` is a shell session: each `$ headcount ...`
  command (with its `\\` continuations; `mkdir -p` too) runs in order in one working
  directory, with the hub name of MiniLM, `$G` and the example configs replaced by a tiny
  checkpoint, a small GLUE folder (rows of the README's tasks from the shared data) and a
  small version of the config (`workdir`). It must succeed (or, if its output is an error
  line, fail with exactly that line), and every line the README shows for it must have
  the form of a line it printed (numbers and durations masked; the README may leave
  lines out);
- a `python` block runs in the same directory, with the same substitutions, where it
  stands among the sessions (its printed numbers depend on the model and are not
  compared);
- a `toml` block is an excerpt of a study config: with the sections it lacks filled in, it
  must be a valid config;
- the set-up block (`make demo`, `make test`) is checked through the demo's config: it
  must be valid and its plan must find the MiniLM weights and BBC News.
Any other block fails the test: a new kind of example needs a way to be checked here.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR, REPO, make_config, write_tokenizer

from headcount.cli.app import main

README = REPO / "README.md"
HUB = "sentence-transformers/all-MiniLM-L6-v2"
# Rows per split of each small GLUE task.
GLUE_ROWS = {"SST-2": 48, "RTE": 24, "MRPC": 24, "STS-B": 24}
NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?(e[-+]?\d+)?|\bnan\b")
DURATION = re.compile(r"~# ?(s|min|h)\b")


@dataclass
class Command:
    argv: list[str]
    expected: list[str] = field(default_factory=list)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a Markdown text."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def session(body: str) -> list[Command]:
    """The `$ ` commands of a session block, each with the output lines shown after it."""
    commands: list[Command] = []
    lines = iter(body.splitlines())
    for line in lines:
        if line.startswith("$ "):
            text = line[2:]
            while text.endswith("\\"):
                text = text[:-1] + " " + next(lines).strip()
            commands.append(Command(shlex.split(text)))
        elif line.strip() and line.strip() != "..." and commands:
            commands[-1].expected.append(line)
    return commands


def form(line: str) -> str:
    """A line with its numbers and durations masked: what must not change."""
    return DURATION.sub("~T", re.sub(r"\s+", " ", NUMBER.sub("#", line.strip())))


def small_glue(root: Path) -> Path:
    """The first rows of the shared GLUE files of the README's tasks, in GLUE's layout."""
    for task, rows in GLUE_ROWS.items():
        (root / task).mkdir(parents=True)
        for split in ("train", "dev"):
            lines = (GLUE_DIR / task / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
            (root / task / f"{split}.tsv").write_text("\n".join(lines[:rows + 1]) + "\n",
                                                      encoding="utf-8")
    return root


# Sizes that make a study config run in seconds on a tiny model (its sections stay as
# written: every analysis still runs).
SMALL_STUDY = {
    "study": {"seeds": [0], "device": "cpu"},
    "pretrain": {"importance_max_examples": 4, "curve_max_examples": 4, "max_length": 24,
                 "fit_steps": 2},
    "finetune": {"max_steps": 2, "max_length": 24, "train_max_examples": 8},
    "importance": {"max_examples": 8},
    "pruning": {"max_examples": 8},
    "analyses": {"drift_max_examples": 4},
    "estimators": {"max_examples": 4},
}


def small_study(config: Path, out: Path, model: Path, glue: Path, text: Path) -> Path:
    """`config` with the tiny model and data and `SMALL_STUDY`'s sizes, as a TOML file."""
    raw = tomllib.loads(config.read_text())
    for section, values in SMALL_STUDY.items():
        if section in raw:
            raw[section].update(values)
    for entry in raw["models"]:
        entry["path"] = str(model)
    for entry in raw["tasks"]:
        entry["data_dir"] = str(glue)
    raw["pretrain"]["text"] = str(text)
    out.write_text(toml_text(raw))
    return out


def toml_text(raw: dict) -> str:
    """The TOML of a study config (tables, arrays of tables, scalars and lists)."""
    def scalar(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return repr(value)

    lines = []
    for name, section in raw.items():
        for table in section if isinstance(section, list) else [section]:
            lines.append(f"[[{name}]]" if isinstance(section, list) else f"[{name}]")
            lines += [f"{key} = {scalar(value)}" for key, value in table.items()]
            lines.append("")
    return "\n".join(lines)


def tiny_pretrained(directory: Path) -> Path:
    """A tiny BERT with a masked-LM head and no classifier (as the pre-trained MiniLM), with
    positions for the README's --max-length 128 and MiniLM's 6 layers (freezing 5)."""
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    config = make_config("bert", max_position_embeddings=130, num_hidden_layers=6)
    AutoModelForMaskedLM.from_config(config).save_pretrained(directory)
    write_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with the substitutes the README's examples run on."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"shared GLUE data not found at {GLUE_DIR}")
    root = tmp_path_factory.mktemp("readme")
    model = tiny_pretrained(root / "tiny-pretrained")
    glue = small_glue(root / "glue")
    text = root / "text.txt"
    text.write_text("the movie was good and the story was great fun . " * 60)
    substitutes = {HUB: str(model), "$G": str(glue), "../shared/data/glue": str(glue)}
    for name in ("glue-local.toml",):
        substitutes[f"examples/{name}"] = str(small_study(
            REPO / "examples" / name, root / name, model, glue, text))
    return root, substitutes


def substitute(text: str, substitutes: dict[str, str]) -> str:
    for name, value in substitutes.items():
        text = text.replace(name, value)
    return text


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def readme_examples() -> list[tuple[str, object]]:
    """The README's examples in their order: ("session", commands) or ("python", code);
    the set-up block and the outputs shown after a block are left out."""
    examples, previous = [], None
    for language, body in fenced_blocks(README.read_text(encoding="utf-8")):
        if language == "text" and body.lstrip().startswith("$ "):
            examples.append(("session", session(body)))
        elif language == "python":
            examples.append(("python", body))
        elif language == "toml":
            examples.append(("toml", body))
        elif language == "bash" and "make demo" in body:
            pass  # test_the_demo_of_the_set_up_block_is_ready_to_run
        elif not (language == "text" and previous in ("python", "bash")):
            pytest.fail(f"a README block this test does not know how to check:\n{body}")
        previous = language
    return examples


def check_command(command: Command, substitutes: dict[str, str]) -> str | None:
    """Run one `$ ` command of a session; what is wrong with it, or None."""
    argv = [substitute(arg, substitutes) for arg in command.argv]
    if argv[:2] == ["mkdir", "-p"]:
        for folder in argv[2:]:
            Path(folder).mkdir(parents=True, exist_ok=True)
        return None
    shown = " ".join(command.argv)
    if argv[0] != "headcount":
        return f"{shown}: not a headcount command"
    code, out, err = run(argv[1:])
    error = [line for line in command.expected if line.startswith("headcount: error:")]
    if error:
        if code != 2 or form(err) != form(error[0]):
            return f"{shown}: expected {error[0]!r}, got {code}: {err!r}"
        return None
    if code != 0:
        return f"{shown}: exit {code}: {err.strip()[-500:]}"
    printed = {form(line) for line in out.splitlines()}
    missing = [line for line in command.expected if form(line) not in printed]
    if missing:
        return f"{shown}: printed no line like {missing[0]!r}; printed:\n{out}"
    return None


def check_config_excerpt(text: str) -> None:
    """A study config excerpt: with the sections it lacks filled in, a valid config."""
    from headcount.study.config import parse_config

    raw = {"study": {"name": "excerpt"}, "models": [{"name": "m", "path": "m"}],
           "tasks": [{"name": "t", "task": "sst2"}],
           "pretrain": {"text": str(REPO / "README.md")}, **tomllib.loads(text)}
    parse_config(toml_text(raw), "README.md excerpt")


def test_every_example_of_the_readme_runs(workdir, monkeypatch, offline):
    root, substitutes = workdir
    monkeypatch.chdir(root)
    examples = readme_examples()
    assert {kind for kind, _ in examples} == {"session", "python", "toml"}
    problems = []
    for kind, example in examples:
        if kind == "toml":
            check_config_excerpt(example)
            continue
        if kind == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(substitute(example, substitutes), "README.md", "exec"), {})
            continue
        problems += [problem for command in example
                     if (problem := check_command(command, substitutes)) is not None]
    assert not problems, "\n\n".join(problems)


def test_the_demo_of_the_set_up_block_is_ready_to_run(tmp_path):
    from headcount.study.config import parse_config
    from headcount.study.demo import demo_config_text
    from headcount.study.outline import plan_study

    plan = plan_study(parse_config(demo_config_text(), "demo config"), tmp_path / "demo")
    assert not plan.problems and not plan.notes
    assert all(unit.passes is not None for unit in plan.units)
    assert not (tmp_path / "demo").exists()
