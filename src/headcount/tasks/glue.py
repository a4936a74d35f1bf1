"""The nine GLUE tasks: their metadata and a loader for the original TSV files or the hub.

Offline, `load_glue` reads the TSV files exactly as GLUE distributed them (one folder per
task, e.g. `glue_data/SST-2/train.tsv`). Online (`data_dir=None`) it reads the
`nyu-mll/glue` dataset from the Hugging Face hub. Both paths return the same `Example`
records with canonical label ids: the position of the label in `GlueTask.label_names`, which
follows the hub's ClassLabel order so that ids agree whichever way the data was loaded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from headcount.choices import unknown
from headcount.errors import DataError, TaskError
from headcount.tasks.base import Example

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """Static description of one GLUE task (offline layout and hub coordinates)."""

    name: str
    kind: str  # 'classification' or 'regression'
    label_names: tuple[str, ...]
    metric: str  # 'mcc', 'accuracy', 'accuracy_f1' or 'pearson_spearman'
    directory: str
    hub_config: str
    hub_columns: tuple[str, str | None]
    files: dict[str, str] = field(hash=False, default_factory=lambda: dict(_SPLITS))
    hub_splits: dict[str, str] = field(hash=False, default_factory=lambda: dict(_HUB_SPLITS))

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for the regression task STS-B, as in HF model configs)."""
        return len(self.label_names) if self.kind == "classification" else 1


@dataclass(frozen=True)
class _Layout:
    """Where text, pair and label live in a task's TSV files.

    Columns are header names, or 0-based indices for CoLA, whose files have no header.
    `label_coding` says how labels are written: 'int' (the class id itself, e.g. '0'/'1'),
    'name' (the label name, e.g. 'entailment') or 'float' (STS-B scores).
    """

    header: bool
    text: str | int
    pair: str | int | None
    label: str | int
    label_coding: str
    n_fields: int | None = None  # only for header-less files
    skip_malformed: bool = False  # QQP's train file has rows with missing fields


_SPLITS = {"train": "train.tsv", "dev": "dev.tsv"}
_HUB_SPLITS = {"train": "train", "dev": "validation"}
_MNLI_SPLITS = {
    "train": "train.tsv",
    "dev_matched": "dev_matched.tsv",
    "dev_mismatched": "dev_mismatched.tsv",
}
_MNLI_HUB_SPLITS = {
    "train": "train",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}
_NLI3 = ("entailment", "neutral", "contradiction")


def _mnli(name: str, dev: str) -> GlueTask:
    # Both MNLI variants share the train file and accept either dev set by name; they differ
    # only in which dev set plain 'dev' (and 'validation') means.
    files = {**_MNLI_SPLITS, "dev": _MNLI_SPLITS[dev]}
    hub = {**_MNLI_HUB_SPLITS, "dev": _MNLI_HUB_SPLITS[dev]}
    return GlueTask(name, "classification", _NLI3, "accuracy", "MNLI", "mnli",
                    ("premise", "hypothesis"), files, hub)


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("cola", "classification", ("unacceptable", "acceptable"), "mcc",
                     "CoLA", "cola", ("sentence", None)),
    "sst2": GlueTask("sst2", "classification", ("negative", "positive"), "accuracy",
                     "SST-2", "sst2", ("sentence", None)),
    "mrpc": GlueTask("mrpc", "classification", ("not_equivalent", "equivalent"), "accuracy_f1",
                     "MRPC", "mrpc", ("sentence1", "sentence2")),
    "qqp": GlueTask("qqp", "classification", ("not_duplicate", "duplicate"), "accuracy_f1",
                    "QQP", "qqp", ("question1", "question2")),
    "stsb": GlueTask("stsb", "regression", (), "pearson_spearman",
                     "STS-B", "stsb", ("sentence1", "sentence2")),
    "mnli": _mnli("mnli", "dev_matched"),
    "mnli-mm": _mnli("mnli-mm", "dev_mismatched"),
    "qnli": GlueTask("qnli", "classification", ("entailment", "not_entailment"), "accuracy",
                     "QNLI", "qnli", ("question", "sentence")),
    "rte": GlueTask("rte", "classification", ("entailment", "not_entailment"), "accuracy",
                    "RTE", "rte", ("sentence1", "sentence2")),
    "wnli": GlueTask("wnli", "classification", ("not_entailment", "entailment"), "accuracy",
                     "WNLI", "wnli", ("sentence1", "sentence2")),
}

_LAYOUTS: dict[str, _Layout] = {
    # CoLA: source, label, original label (often '*' or empty), sentence -- no header.
    "cola": _Layout(False, 3, None, 1, "int", n_fields=4),
    "sst2": _Layout(True, "sentence", None, "label", "int"),
    "mrpc": _Layout(True, "#1 String", "#2 String", "Quality", "int"),
    "qqp": _Layout(True, "question1", "question2", "is_duplicate", "int", skip_malformed=True),
    "stsb": _Layout(True, "sentence1", "sentence2", "score", "float"),
    "mnli": _Layout(True, "sentence1", "sentence2", "gold_label", "name"),
    "mnli-mm": _Layout(True, "sentence1", "sentence2", "gold_label", "name"),
    "qnli": _Layout(True, "question", "sentence", "label", "name"),
    "rte": _Layout(True, "sentence1", "sentence2", "label", "name"),
    # WNLI writes 0/1 with 1 = entailment, which is already the hub's id order.
    "wnli": _Layout(True, "sentence1", "sentence2", "label", "int"),
}

# Other names users reach for; each applies only where the target split exists.
_SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}


def get_glue_task(name: str) -> GlueTask:
    """The `GlueTask` called `name` (case-insensitive); TaskError for an unknown name."""
    key = name.strip().lower()
    if key not in GLUE_TASKS:
        raise TaskError(unknown("GLUE task", name, sorted(GLUE_TASKS)))
    return GLUE_TASKS[key]


def resolve_split(task: GlueTask, split: str) -> str:
    """The canonical split name (a key of `task.files`) for `split` or one of its aliases."""
    key = split.strip().lower()
    key = _SPLIT_ALIASES.get(key, key) if key not in task.files else key
    if key not in task.files:
        aliases = {alias for alias, target in _SPLIT_ALIASES.items() if target in task.files}
        allowed = sorted(set(task.files) | aliases)
        raise TaskError(unknown(f"split of GLUE task {task.name}", split, allowed))
    return key


def load_glue(name: str, split: str, data_dir: str | Path | None) -> list[Example]:
    """Load one split of a GLUE task as `Example`s with canonical label ids.

    `data_dir` is the folder holding GLUE's task folders (e.g. `glue_data/`, containing
    `SST-2/`), or a task folder itself; None loads `nyu-mll/glue` from the hub instead.
    Labels are int class ids (index into `label_names`), or floats for STS-B.
    """
    task = get_glue_task(name)
    split = resolve_split(task, split)
    if data_dir is None:
        return _load_from_hub(task, split)
    path = _tsv_path(task, split, Path(data_dir))
    return _parse_tsv(path, task, _LAYOUTS[task.name])


# --------------------------------------------------------------------------- local files


def _tsv_path(task: GlueTask, split: str, data_dir: Path) -> Path:
    """Find `<data_dir>/<directory>/<file>`, accepting data_dir = the task folder itself."""
    if not data_dir.is_dir():
        raise DataError(
            f"GLUE data directory not found: {data_dir} (expected a folder containing "
            f"{task.directory}/{task.files[split]})."
        )
    folder = data_dir / task.directory
    if not folder.is_dir():
        if data_dir.name.lower() != task.directory.lower():
            raise DataError(
                f"GLUE task folder not found: {folder} (expected --data-dir to hold the "
                f"folder {task.directory}/ with {', '.join(sorted(set(task.files.values())))})."
            )
        folder = data_dir
    path = folder / task.files[split]
    if not path.is_file():
        raise DataError(
            f"GLUE file not found: {path} (expected the {split!r} split of {task.name} "
            f"as GLUE distributes it: {task.directory}/{task.files[split]})."
        )
    return path


def _read_rows(path: Path):
    """Yield (line number, fields) for each non-blank line, split on tabs.

    No csv quoting on purpose: GLUE files contain unbalanced quote characters (MRPC, QQP,
    MNLI) that a csv reader would treat as field openers and merge lines.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if number == 1:
                line = line.removeprefix("\ufeff")  # MRPC's files start with a BOM
            if line:
                yield number, line.split("\t")


def _parse_tsv(path: Path, task: GlueTask, layout: _Layout) -> list[Example]:
    """Parse one GLUE TSV file into examples (see `_Layout` for the column description)."""
    rows = _read_rows(path)
    if layout.header:
        header = next(rows, (1, []))[1]
        n_fields = len(header)
        columns = (layout.text, layout.pair, layout.label)
        text, pair, label = (_column(header, c, path) for c in columns)
    else:
        n_fields = layout.n_fields
        text, pair, label = layout.text, layout.pair, layout.label
    decode = _label_decoder(task, layout)
    examples, skipped = [], 0
    for number, fields in rows:
        if len(fields) != n_fields:
            if layout.skip_malformed:
                skipped += 1
                continue
            raise DataError(
                f"{path} line {number}: expected {n_fields} tab-separated fields, "
                f"found {len(fields)}."
            )
        examples.append(Example(
            text=fields[text],
            text_pair=fields[pair] if pair is not None else None,
            label=decode(fields[label], path, number),
        ))
    if skipped:
        warnings.warn(
            f"Skipped {skipped} malformed row(s) without {n_fields} tab-separated fields "
            f"in {path}.",
            stacklevel=3,
        )
    if not examples:
        raise DataError(f"{path} contains no examples.")
    return examples


def _column(header: list[str], name: str | None, path: Path) -> int | None:
    """Index of column `name` in `header` (None passes through)."""
    if name is None:
        return None
    if name not in header:
        shown = ", ".join(repr(h) for h in header) or "nothing"
        raise DataError(f"{path}: no column {name!r} in the header line (found {shown}).")
    return header.index(name)


def _label_decoder(task: GlueTask, layout: _Layout):
    """A function (value, path, line) -> canonical label for the task's label coding."""
    if layout.label_coding == "float":
        return _decode_score
    if layout.label_coding == "int":
        ids = {str(i): i for i in range(len(task.label_names))}
    else:
        ids = {name: i for i, name in enumerate(task.label_names)}

    def decode(value: str, path: Path, number: int) -> int:
        try:
            return ids[value.strip()]
        except KeyError:
            raise DataError(
                f"{path} line {number}: label {value!r} is not one of "
                f"{', '.join(ids)} for GLUE task {task.name}."
            ) from None

    return decode


def _decode_score(value: str, path: Path, number: int) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise DataError(f"{path} line {number}: score {value!r} is not a finite number.")
    return score


# --------------------------------------------------------------------------- hub


def _load_from_hub(task: GlueTask, split: str) -> list[Example]:
    """Load `split` of `task` from the `nyu-mll/glue` dataset on the Hugging Face hub."""
    hub_split = task.hub_splits[split]
    try:
        import datasets

        dataset = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as exc:  # no network, no cache, hub changes: all mean "use local files"
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(
            f"Could not load GLUE {task.name} ({hub_split}) from the Hugging Face hub "
            f"({type(exc).__name__}: {detail}). For offline use pass --data-dir pointing at "
            f"the GLUE TSV folders."
        ) from exc
    return _examples_from_hub(task, dataset)


def _examples_from_hub(task: GlueTask, dataset) -> list[Example]:
    """Convert hub rows (text column(s) and an id `label`) into `Example`s."""
    text_column, pair_column = task.hub_columns
    texts = list(dataset[text_column])
    pairs = list(dataset[pair_column]) if pair_column else [None] * len(texts)
    labels = list(dataset["label"])
    if task.kind == "regression":
        return [Example(t, p, float(y)) for t, p, y in zip(texts, pairs, labels, strict=True)]
    examples = []
    for t, p, y in zip(texts, pairs, labels, strict=True):
        # Hub test splits carry -1; only labelled splits are exposed, so this is corruption.
        if not 0 <= int(y) < len(task.label_names):
            raise DataError(f"GLUE {task.name} from the hub has an invalid label {y!r}.")
        examples.append(Example(t, p, int(y)))
    return examples
