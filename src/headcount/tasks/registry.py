"""Task names -> what to load and how to score it.

`--task` takes a GLUE name (`sst2`), `file:PATH` (a local .tsv/.csv/.jsonl), `dir:PATH` (a
folder with one sub-folder per class and one text file per example) or `mlm:PATH` (raw text
for the masked-LM pre-train task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from headcount.choices import unknown
from headcount.errors import DataError, TaskError
from headcount.tasks.base import Example
from headcount.tasks.folders import class_files, load_folder
from headcount.tasks.glue import GLUE_TASKS, load_glue
from headcount.tasks.mlm import read_documents
from headcount.tasks.tables import load_table

CLASSIFICATION, REGRESSION, MLM = "classification", "regression", "mlm"


@dataclass(frozen=True)
class Task:
    """A resolved `--task`. `kind` is None for local files until a model decides it
    (a one-output head means regression)."""

    name: str
    kind: str | None
    metric: str | None
    label_names: tuple[str, ...] = ()
    # split -> examples (downstream) or documents (masked LM)
    load: Callable[[str], list[Example] | list[str]] = field(repr=False, default=None)
    # dir: tasks: the number of class folders, to size a new classification head
    num_classes: int | None = None

    @property
    def is_mlm(self) -> bool:
        return self.kind == MLM


def _glue_task(name: str, data_dir: str | None) -> Task:
    glue = GLUE_TASKS[name]
    return Task(
        name=name,
        kind=glue.kind,
        metric=glue.metric,
        label_names=tuple(glue.label_names),
        load=lambda split: load_glue(name, split, data_dir),
    )


def _file_task(spec: str, path: str, text_column, text_pair_column, label_column) -> Task:
    if not text_column or not label_column:
        raise TaskError(f"--task {spec} needs --text-column and --label-column")
    return Task(
        name=spec,
        kind=None,
        metric=None,
        # A local file is the whole data set: the split is not used.
        load=lambda split: load_table(path, text_column, text_pair_column, label_column),
    )


def _dir_task(spec: str, path: str) -> Task:
    classes = class_files(path)  # check the layout now: one-line errors before any loading
    # Like file: tasks, the kind is left to the model's head and labels stay raw strings
    # (the class folders' names), mapped onto the head's ids by `map_labels`.
    return Task(name=spec, kind=None, metric=None, load=lambda split: load_folder(path, split),
                num_classes=len(classes))


def _mlm_task(spec: str, path: str) -> Task:
    if not Path(path).exists():
        raise DataError(f"masked-LM text not found: {path} (expected a text file or a directory)")
    return Task(name=spec, kind=MLM, metric="recall@1", load=lambda split: read_documents(path))


def resolve_task(
    spec: str,
    *,
    data_dir: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
) -> Task:
    """Parse a `--task` value. Unknown names get the closest match and the full list.

    Example:
        >>> resolve_task("sst2", data_dir="../shared/data/glue").metric
        'accuracy'
    """
    if spec.startswith("file:"):
        return _file_task(spec, spec[5:], text_column, text_pair_column, label_column)
    if spec.startswith("mlm:"):
        return _mlm_task(spec, spec[4:])
    if spec.startswith("dir:"):
        return _dir_task(spec, spec[4:])
    name = spec.lower()
    if name in GLUE_TASKS:
        return _glue_task(name, data_dir)
    allowed = sorted(GLUE_TASKS)
    raise TaskError(unknown(
        "task", spec, allowed, "file:PATH (.tsv/.csv/.jsonl), dir:PATH (one sub-folder per "
        "class), mlm:PATH (text file or directory)"))
