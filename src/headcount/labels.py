"""Map a task's labels onto the label ids of a model's classification head.

A checkpoint fine-tuned elsewhere may order classes differently from GLUE's canonical order
(roberta-large-mnli: CONTRADICTION, NEUTRAL, ENTAILMENT). When the head's `id2label` names
are the task's label names, labels are mapped by name; otherwise the task's order is used.
"""

from __future__ import annotations

import math
import re

from headcount.errors import DataError
from headcount.tasks.registry import CLASSIFICATION, REGRESSION, Task

_DEFAULT_NAME = re.compile(r"^label_\d+$")


def _normalise(name) -> str:
    return str(name).strip().lower().replace(" ", "_")


def _named_classes(config) -> dict[str, int] | None:
    """Head's class name -> id when the names mean something (not LABEL_0, LABEL_1, ...)."""
    id2label = getattr(config, "id2label", None) or {}
    names = {_normalise(name): int(i) for i, name in id2label.items()}
    if not names or all(_DEFAULT_NAME.match(name) for name in names):
        return None
    return names


def task_kind(task: Task, config) -> str:
    """Classification or regression: fixed for GLUE, the head's size decides for files."""
    if task.kind is not None:
        return task.kind
    return REGRESSION if config.num_labels == 1 else CLASSIFICATION


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None


def _class_key(value) -> int | str:
    """A raw class label as an int when it spells one, else as a normalised name."""
    as_int = _as_int(value)
    return as_int if as_int is not None else _normalise(value)


def _regression_labels(task: Task, raw: list) -> list[float]:
    labels = []
    for value in raw:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"label {value!r} of {task.name} is not a number, but the model has a "
                "one-output (regression) head"
            ) from None
        if not math.isfinite(number):
            raise DataError(f"label {value!r} of {task.name} is not a finite number")
        labels.append(number)
    return labels


def map_labels(task: Task, raw: list, config) -> tuple[list[int] | list[float], str]:
    """Labels as the model's ids (or floats for regression), and how they were mapped.

    Raises DataError for labels the head cannot take: more distinct values than outputs,
    or integer ids beyond the head's size.
    """
    kind = task_kind(task, config)
    num_labels = config.num_labels
    if kind == REGRESSION:
        if num_labels != 1:
            raise DataError(
                f"{task.name} is a regression task; the model's head has {num_labels} "
                "outputs, expected 1"
            )
        return _regression_labels(task, raw), "regression"
    named = _named_classes(config)
    if task.label_names:  # GLUE: raw values are canonical ids into label_names
        if len(task.label_names) != num_labels:
            raise DataError(
                f"{task.name} has {len(task.label_names)} labels "
                f"({', '.join(task.label_names)}) but the model's classification head has "
                f"{num_labels}"
            )
        if named and set(named) == {_normalise(n) for n in task.label_names}:
            to_model = [named[_normalise(n)] for n in task.label_names]
            return [to_model[label] for label in raw], "by name (model id2label)"
        return list(raw), "canonical GLUE order"
    # One class per canonical spelling: ' 0' is 0, 'Positive' is 'positive'.
    keys = [_class_key(value) for value in raw]
    values = sorted(set(keys), key=str)
    if len(values) > num_labels:
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise DataError(
            f"{task.name} has {len(values)} label values ({shown}) but the model's "
            f"classification head has {num_labels} labels"
        )
    if named and all(str(v) in named for v in values):
        return [named[str(k)] for k in keys], "by name (model id2label)"
    if all(isinstance(v, int) for v in values):
        bad = [v for v in values if not 0 <= v < num_labels]
        if bad:
            raise DataError(
                f"{task.name} has label ids {bad} outside 0..{num_labels - 1} "
                f"(the model's classification head has {num_labels} labels)"
            )
        return keys, "integer ids"
    index = {value: i for i, value in enumerate(values)}
    order = ", ".join(f"{v}={i}" for v, i in index.items())
    return [index[k] for k in keys], f"sorted label values ({order})"
