"""The study's TOML configuration: schema, defaults, and validation that reports every
problem at once, each naming its key and what is allowed, before any work starts.

    [study]      name, seeds, device
    [[models]]   name, path, mlm_path | fit_mlm_head
    [[tasks]]    name, task, data_dir, text_column, text_pair_column, label_column,
                 train_split, eval_split, labels, problem
    [pretrain]   text, importance_max_examples, importance_fraction, curve_max_examples,
                 curve_fraction, max_length, fit_steps
    [finetune]   epochs, lr, batch_size, max_length, warmup, weight_decay, max_steps,
                 train_fraction, train_max_examples
    [importance] normalizations, split, fraction, max_examples, batch_size
    [pruning]    units, schedule, step, keep_one_per_layer, split, fraction, max_examples,
                 batch_size
    [analyses]   recall, recall_threshold, drift, drift_max_examples, correlation,
                 freezing, pruned_finetune
    [orders]     names, draws, finetune, finetune_ratios, compensation   (Budhraja et al.)
    [estimators] names, max_examples, curves                            (vs exact ablation)
    [sparsity]   levels, scope, finetune_levels, after_finetune         (Gordon et al.)
    [compress]   budgets, seq_length, max_examples, batch_size          (Kwon et al.)

Relative paths (a task's data_dir and file:/dir: path, [pretrain].text, a model's local
path) are read from the config file's folder (`load_config`), so that a config runs the same
from any directory; a path given on the command line stays relative to the current one.

The companion sections are off when absent: each adds work (curves, fine-tuning runs)
that a study of importance alone does not need.

This module is the whole config (`StudyConfig`, `parse_config`, `load_config`); each
section's dataclass and checks are in `config_sections`, the value checks they share in
`config_checks`.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from headcount.errors import ConfigError
from headcount.study.config_checks import Problems, unknown_keys
from headcount.study.config_sections import (
    AnalysesSpec,
    CompressSpec,
    EstimatorsSpec,
    FinetuneSpec,
    ImportanceSpec,
    ModelSpec,
    OrdersSpec,
    PretrainSpec,
    PruningSpec,
    SparsitySpec,
    TaskSpec,
    read_analyses,
    read_compress,
    read_estimators,
    read_finetune,
    read_importance,
    read_models,
    read_orders,
    read_pretrain,
    read_pruning,
    read_sparsity,
    read_study,
    read_tasks,
)

SECTIONS = ("study", "models", "tasks", "pretrain", "finetune", "importance", "pruning",
            "analyses", "orders", "estimators", "sparsity", "compress")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    seeds: tuple[int, ...]
    device: str
    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    importance: ImportanceSpec = field(default_factory=ImportanceSpec)
    pruning: PruningSpec = field(default_factory=PruningSpec)
    analyses: AnalysesSpec = field(default_factory=AnalysesSpec)
    orders: OrdersSpec = field(default_factory=OrdersSpec)
    estimators: EstimatorsSpec = field(default_factory=EstimatorsSpec)
    sparsity: SparsitySpec = field(default_factory=SparsitySpec)
    compress: CompressSpec = field(default_factory=CompressSpec)
    text: str = ""  # the TOML as given, for the run directory and the report

    @property
    def digest(self) -> str:
        """Identifies the configuration of a run directory (its TOML, byte for byte)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def parse_config(text: str, source: str = "config", base: Path | None = None) -> StudyConfig:
    """Parse and validate a study configuration; ConfigError lists every problem. Relative
    paths in it are read from the folder `base` (the config file's; None: the current
    directory).

    Example:
        >>> config = parse_config(Path("examples/glue-local.toml").read_text(),
        ...                       base=Path("examples"))
        >>> [task.name for task in config.tasks]
        ['mrpc', 'sst2']
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
    if base is not None:
        raw = resolve_paths(raw, base)
    problems = Problems()
    unknown_keys(raw, "(top level)", set(SECTIONS), problems)
    name, seeds, device = read_study(raw, problems)
    models, tasks = read_models(raw, problems), read_tasks(raw, problems)
    # In this order, so that the problems are listed in the order of the sections.
    sections = [read(raw, problems) for read in (
        read_pretrain, read_finetune, read_importance, read_pruning, read_analyses,
        read_orders, read_estimators, read_sparsity, read_compress)]
    problems.raise_any(source)
    return StudyConfig(name, tuple(seeds), device, models, tasks, *sections, text)


def run_dir(config: StudyConfig, out: str | None) -> Path:
    """The run directory: `--out`, or runs/<study name> under the current directory."""
    return Path(out) if out is not None else Path("runs") / config.name


def load_config(path: str | Path) -> StudyConfig:
    """The study config in the file `path`; its relative paths are read from the file's
    folder, so the config runs the same from any directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    return parse_config(path.read_text(encoding="utf-8"), str(path),
                        base=path.resolve().parent)


# Task specs that carry a path after their prefix (GLUE names carry none).
PATH_TASKS = ("file:", "dir:", "mlm:")


def resolve_paths(raw: dict, base: Path) -> dict:
    """`raw` (the parsed TOML) with its relative paths made absolute against `base`: the
    tasks' data_dir and file:/dir: paths, [pretrain].text, and a model's path or mlm_path
    where it names something under `base` or starts with ./ or ../ (anything else is a hub
    name, such as sentence-transformers/all-MiniLM-L6-v2). Values of the wrong type are left
    for the checks to report."""
    def under_base(value: str) -> str:
        return os.path.normpath(base / Path(value).expanduser())

    def data(value):
        if not isinstance(value, str) or not value:
            return value
        prefix = next((p for p in PATH_TASKS if value.startswith(p)), "")
        return prefix + under_base(value.removeprefix(prefix))

    def task(value):
        return data(value) if isinstance(value, str) and value.startswith(PATH_TASKS) else value

    def model(value):
        if not isinstance(value, str) or not value:
            return value
        local = value.startswith(("./", "../", "~", "/")) or Path(under_base(value)).exists()
        return under_base(value) if local else value

    def entries(found, readers: dict):
        if not isinstance(found, list):
            return found
        return [{key: readers.get(key, lambda v: v)(v) for key, v in entry.items()}
                if isinstance(entry, dict) else entry for entry in found]

    resolved = dict(raw)
    if "models" in raw:
        resolved["models"] = entries(raw["models"], {"path": model, "mlm_path": model})
    if "tasks" in raw:
        resolved["tasks"] = entries(raw["tasks"], {"data_dir": data, "task": task})
    if isinstance(raw.get("pretrain"), dict) and "text" in raw["pretrain"]:
        resolved["pretrain"] = {**raw["pretrain"], "text": data(raw["pretrain"]["text"])}
    return resolved
