"""Whole jobs, from a model name and a task spec to a result record (what the CLI runs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from headcount.data import EncodedData, prepare_data
from headcount.distributed import rank_and_world
from headcount.errors import ConfigError
from headcount.evaluation import Evaluation, evaluate
from headcount.models import LoadedModel, load_model
from headcount.tasks.registry import Task, resolve_task


@dataclass(frozen=True)
class DataOptions:
    """Which examples of a task to use, and how to tokenise and batch them."""

    task: str
    data_dir: str | None = None
    split: str = "train"
    max_examples: int | None = None
    fraction: float | None = None
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None

    def resolve(self) -> Task:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be at least 1")
        return resolve_task(
            self.task, data_dir=self.data_dir, text_column=self.text_column,
            text_pair_column=self.text_pair_column, label_column=self.label_column,
        )


def load_for_task(model: str, task: Task, *, device=None, seed: int = 0) -> LoadedModel:
    num_labels = (len(task.label_names) or task.num_classes
                  or (1 if task.kind == "regression" else None))
    # A checkpoint without a task head gets a random one: seed it so runs are reproducible.
    torch.manual_seed(seed)
    return load_model(model, task.kind or "classification", num_labels=num_labels,
                      device=device)


def prepare_for(loaded: LoadedModel, task: Task, options: DataOptions) -> EncodedData:
    """The task's examples for this model; under torch.distributed, this process's share
    (the library functions then combine the processes' sums)."""
    return prepare_data(
        task, loaded.tokenizer, loaded.model.config, split=options.split,
        max_length=options.max_length, fraction=options.fraction,
        max_examples=options.max_examples, seed=options.seed,
    ).for_this_process()


def data_record(model: str, options: DataOptions, data: EncodedData, num_examples: int) -> dict:
    return {
        "model": model,
        "task": options.task,
        "split": options.split,
        "num_examples": num_examples,
        "processes": rank_and_world()[1],
        "label_mapping": data.label_mapping,
        "options": {k: v for k, v in asdict(options).items() if k not in ("task", "split")},
    }




@dataclass(frozen=True)
class PreparedTask:
    """A task resolved, a model loaded for it and its examples encoded: what every job that
    scores a model starts from."""

    task: Task
    loaded: LoadedModel
    data: EncodedData
    options: DataOptions

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    def batches(self):
        return self.data.batches(self.options.batch_size)

    def num_batches(self) -> int:
        return self.data.num_batches(self.options.batch_size)

    def evaluate(self, model: nn.Module | None = None, *, progress: bool = False) -> Evaluation:
        """The task's metrics of `model` (default: the loaded model) on these examples."""
        return evaluate(self.model if model is None else model, self.batches(), self.data.kind,
                        self.task.metric, progress=progress, total=self.num_batches())


def prepare_task(model: str, options: DataOptions, *, device=None) -> PreparedTask:
    """Resolve `options.task`, load `model` for it (a seeded new head where it has none) and
    encode this process's share of its examples.

    Example:
        >>> prepared = prepare_task("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"))
        >>> prepared.evaluate().main
    """
    task = options.resolve()
    loaded = load_for_task(model, task, device=device, seed=options.seed)
    return PreparedTask(task, loaded, prepare_for(loaded, task, options), options)
