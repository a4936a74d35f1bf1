"""What every job starts from: the data options of a command, and "resolve the task, load the
model for it, encode the examples" (`prepare_task`, a `PreparedTask` that also evaluates)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from headcount.backoff import BatchBackoff
from headcount.data import EncodedData, prepare_data
from headcount.distributed import rank_and_world
from headcount.errors import ConfigError
from headcount.evaluation import Evaluation, evaluate
from headcount.labels import LabelScheme, label_scheme
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
    # A new head (checkpoint without a trained one) on file:/dir: data: its classes in this
    # order, and classification or regression instead of detecting it from the labels.
    labels: tuple[str, ...] | None = None
    problem: str | None = None

    def resolve(self) -> Task:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be at least 1")
        return resolve_task(
            self.task, data_dir=self.data_dir, text_column=self.text_column,
            text_pair_column=self.text_pair_column, label_column=self.label_column,
        )


def head_labels(task: Task, options: DataOptions) -> LabelScheme | None:
    """What a new head for `task` predicts (see `headcount.labels.label_scheme`): for file:
    and dir: tasks decided by the labels of `options.split`; None for masked LM."""
    if task.is_mlm:
        if options.labels or options.problem:
            raise ConfigError(f"--labels and --problem are for classification and regression "
                              f"tasks, not {task.name}")
        return None
    raw = [] if task.kind is not None else [example.label for example in
                                            task.load(options.split)]
    return label_scheme(task, raw, labels=options.labels, problem=options.problem)


def load_for_task(model: str, task: Task, *, device=None, seed: int = 0,
                  options: DataOptions | None = None) -> LoadedModel:
    """`model` with a head for `task`: its own trained one, or a new seeded random one built
    for the task's labels (with `options`, those of its split; see `head_labels`)."""
    labels = None if options is None else (lambda: head_labels(task, options))
    num_labels = (len(task.label_names) or task.num_classes
                  or (1 if task.kind == "regression" else None))
    # A checkpoint without a task head gets a random one: seed it so runs are reproducible.
    torch.manual_seed(seed)
    return load_model(model, task.kind or "classification", num_labels=num_labels,
                      labels=labels, device=device)


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
    scores a model starts from. Its evaluations share one out-of-memory `backoff`: once a
    batch had to be halved, every later evaluation (each point of a curve) starts from the
    size that fits."""

    task: Task
    loaded: LoadedModel
    data: EncodedData
    options: DataOptions
    backoff: BatchBackoff = field(default_factory=BatchBackoff)

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
                        self.task.metric, progress=progress, total=self.num_batches(),
                        backoff=self.backoff)


def prepare_task(model: str, options: DataOptions, *, device=None) -> PreparedTask:
    """Resolve `options.task`, load `model` for it (a seeded new head where it has none) and
    encode this process's share of its examples.

    Example:
        >>> prepared = prepare_task("ckpt/", DataOptions("sst2", data_dir=glue, split="dev"))
        >>> prepared.evaluate().main
    """
    task = options.resolve()
    loaded = load_for_task(model, task, device=device, seed=options.seed, options=options)
    return PreparedTask(task, loaded, prepare_for(loaded, task, options), options)
