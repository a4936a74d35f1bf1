"""A task's labels: the classes a new head is built for, and the mapping of labels onto the
ids of a model's classification head.

A checkpoint without a trained head gets one sized by `label_scheme`: for GLUE the task's
own classes; for local files and folders the distinct labels of the training data (numbers
in numeric order, strings in sorted order, or an order the user gives), or one output for
regression (a label column with non-integer numbers, or when asked). The class names go into
the config's `id2label`/`label2id`, so that every later command maps labels by name.

A checkpoint fine-tuned elsewhere may order classes differently from GLUE's canonical order
(roberta-large-mnli: CONTRADICTION, NEUTRAL, ENTAILMENT). When the head's `id2label` names
are the task's label names, labels are mapped by name; otherwise the task's order is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from headcount.choices import PROBLEMS, check_choice
from headcount.errors import ConfigError, DataError
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
    if isinstance(value, str) and _is_number(value) and float(value).is_integer():
        return int(float(value))  # "4.0" in a text file is class 4
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
    if named and all(str(v) in named for v in values):
        return [named[str(k)] for k in keys], "by name (model id2label)"
    if named and (all(_as_int(name) is not None for name in named)
                  or not all(isinstance(v, int) for v in values)):
        # The head names its classes and these labels are not among them: mapping them by
        # position would silently mislabel the data.
        unseen = [str(v) for v in values if str(v) not in named]
        raise DataError(
            f"{task.name} has labels that the model's classes do not include: "
            f"{', '.join(unseen)} (its classes: {', '.join(_names_in_order(config))})"
        )
    if len(values) > num_labels:
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise DataError(
            f"{task.name} has {len(values)} label values ({shown}) but the model's "
            f"classification head has {num_labels} labels"
        )
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


def _names_in_order(config) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


@dataclass(frozen=True)
class LabelScheme:
    """What a new task head predicts: `classes` in id order, or one number (regression)."""

    problem: str  # "classification" or "regression"
    classes: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == REGRESSION else len(self.classes)

    def config_overrides(self) -> dict:
        """The config fields of a head built for this scheme (for `from_pretrained`)."""
        if self.problem == REGRESSION:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": len(self.classes),
                "id2label": dict(enumerate(self.classes)),
                "label2id": {name: i for i, name in enumerate(self.classes)},
                "problem_type": "single_label_classification"}


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _detect_problem(raw: list) -> str:
    """Regression when every label is a number and some are not whole numbers."""
    if raw and all(_is_number(v) for v in raw) and any(_as_int(v) is None for v in raw):
        return REGRESSION
    return CLASSIFICATION


def _numeric_first(key) -> tuple:
    """Sort key: numbers in numeric order, then other names in sorted order."""
    return (0, float(key), "") if _is_number(key) else (1, 0.0, str(key))


def _ordered_classes(task: Task, raw: list, labels: tuple[str, ...] | None) -> tuple[str, ...]:
    """The distinct labels as class names, in the given order or sorted (numbers first, in
    numeric order; then strings)."""
    spelling: dict = {}
    for value in raw:
        spelling.setdefault(_class_key(value), str(value).strip())
    if labels:
        given = [_class_key(name) for name in labels]
        if len(set(given)) != len(given):
            raise ConfigError(f"--labels {','.join(labels)} names a class twice")
        missing = [spelling[key] for key in spelling if key not in given]
        if missing:
            raise DataError(f"{task.name} has labels that --labels does not list: "
                            f"{', '.join(missing)} (--labels {','.join(labels)})")
        return tuple(str(name).strip() for name in labels)
    keys = sorted(spelling, key=_numeric_first)
    return tuple(str(key) if isinstance(key, int) else spelling[key] for key in keys)


def label_scheme(task: Task, raw: list, *, labels: tuple[str, ...] | None = None,
                 problem: str | None = None) -> LabelScheme:
    """The head a checkpoint without a trained one gets for `task`, whose training labels
    are `raw`: GLUE's own classes, else the distinct labels (ordered by `labels` when
    given), or regression (detected, or forced with `problem`).

    Example:
        >>> label_scheme(task, ["neg", "pos", "neutral", "pos"]).classes
        ('neg', 'neutral', 'pos')
    """
    if problem is not None:
        check_choice("problem", problem, PROBLEMS)
    if task.kind is not None:  # GLUE (or masked LM): the task fixes its labels
        if labels or (problem is not None and problem != task.kind):
            given = "--labels" if labels else f"--problem {problem}"
            raise ConfigError(f"{given} is for file: and dir: tasks; {task.name} is a "
                              f"{task.kind} task with its own labels")
        return LabelScheme(task.kind, tuple(task.label_names))
    problem = problem or _detect_problem(raw)
    if problem == REGRESSION:
        if labels:
            raise ConfigError("--labels names classes; a regression task has none")
        _regression_labels(task, raw)  # every label must be a number
        return LabelScheme(REGRESSION)
    classes = _ordered_classes(task, raw, labels)
    if len(classes) < 2:
        raise DataError(f"{task.name} has a single label value ({', '.join(classes)}): "
                        "classification needs at least two classes")
    return LabelScheme(CLASSIFICATION, classes)
