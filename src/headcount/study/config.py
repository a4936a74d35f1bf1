"""The study's TOML configuration: schema, defaults, and validation that reports every
problem at once, each naming its key and what is allowed, before any work starts.

    [study]      name, seeds, device
    [[models]]   name, path, mlm_path | fit_mlm_head
    [[tasks]]    name, task, data_dir, text_column, text_pair_column, label_column,
                 train_split, eval_split
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

The companion sections are off when absent: each adds work (curves, fine-tuning runs)
that a study of importance alone does not need.

This module is the whole config (`StudyConfig`, `parse_config`, `load_config`); each
section's dataclass and checks are in `config_sections`, the value checks they share in
`config_checks`.
"""

from __future__ import annotations

import hashlib
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


def parse_config(text: str, source: str = "config") -> StudyConfig:
    """Parse and validate a study configuration; ConfigError lists every problem.

    Example:
        >>> config = parse_config(Path("examples/glue-local.toml").read_text())
        >>> [task.name for task in config.tasks]
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
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


def load_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    return parse_config(path.read_text(encoding="utf-8"), str(path))
