"""Whole jobs, from a model name and a task spec to a result record (what the CLI runs)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

import torch

from headcount.arch import architecture_signature, head_layout
from headcount.data import EncodedData, prepare_data
from headcount.distributed import rank_and_world
from headcount.errors import ConfigError
from headcount.estimators import check_estimator, estimate_for_record
from headcount.evaluate import evaluate
from headcount.importance import check_normalization
from headcount.io import versions
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


def importance_job(
    model: str, options: DataOptions, *, normalize_method: str = "l1", device=None,
    progress: bool = False, estimator: str = "gradient", heads_per_pass: int | None = None,
) -> dict:
    """Load, estimate importance (`estimator`, see `headcount.estimators`), normalise; the
    `scores.json` record.

    Example:
        >>> record = importance_job("path/to/ckpt", DataOptions("sst2", data_dir=glue))
        >>> record["scores"][0]  # layer 0, l1-normalised
    """
    check_normalization(normalize_method)  # fail before loading anything
    check_estimator(estimator)
    task = options.resolve()
    loaded = load_for_task(model, task, device=device, seed=options.seed)
    data = prepare_for(loaded, task, options)
    result, extras = estimate_for_record(
        loaded.model, data.batches(options.batch_size), data.kind, estimator,
        heads_per_pass=heads_per_pass, progress=progress,
        total=data.num_batches(options.batch_size),
    )
    layers, heads = result.raw.shape
    return {
        **data_record(model, options, data, result.num_examples),
        "normalize": normalize_method,
        "shared_across_layers": result.shared,
        "layers": layers,
        "heads": heads,
        "num_layer_applications": head_layout(loaded.model).num_layers,
        "architecture": architecture_signature(loaded.model),
        "mean_loss": result.mean_loss,
        "new_head": loaded.new_head,
        "raw_scores": result.raw.tolist(),
        "scores": result.normalized(normalize_method).tolist(),
        "estimator": estimator,
        **extras,
        "versions": versions(),
    }


def evaluate_job(model: str, options: DataOptions, *, device=None, progress: bool = False) -> dict:
    """Load and score a model on a task split; the metrics record."""
    task = options.resolve()
    loaded = load_for_task(model, task, device=device, seed=options.seed)
    data = prepare_for(loaded, task, options)
    result = evaluate(
        loaded.model, data.batches(options.batch_size), data.kind, task.metric,
        progress=progress, total=data.num_batches(options.batch_size),
    )
    return {
        **data_record(model, options, data, result.num_examples),
        "metrics": result.metrics,
        "main_metric": result.main,
        "mean_loss": result.mean_loss,
        "new_head": loaded.new_head,
        "versions": versions(),
    }


def make_accelerator(device: str | None = None):
    """An Accelerator for fine-tuning: the global batch split across processes; on CPU it
    must be told so, or a torchrun launch would run every process alone."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(cpu=device == "cpu" or not torch.cuda.is_available(),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def train_and_score(loaded: LoadedModel, task: Task, options: DataOptions, config, *,
                    eval_split: str = "dev", accelerator=None, progress: bool = False,
                    weight_masks: dict | None = None) -> dict:
    """Fine-tune `loaded.model` in place on `options`' split of `task`, then score it on
    `eval_split` (all of it); the metrics record. `weight_masks` keep weights pruned by
    magnitude at 0 (see `headcount.weight_pruning`)."""
    from headcount.finetune import config_record, finetune

    if task.is_mlm:
        raise ConfigError(
            f"fine-tuning is for classification and regression tasks, not {task.name}")
    accelerator = accelerator or make_accelerator(str(next(loaded.model.parameters()).device))
    train = prepare_data(
        task, loaded.tokenizer, loaded.model.config, split=options.split,
        max_length=options.max_length, fraction=options.fraction,
        max_examples=options.max_examples, seed=options.seed,
    )  # not sharded: the accelerator splits every batch across processes
    result = finetune(loaded.model, train, config, accelerator=accelerator, progress=progress,
                      weight_masks=weight_masks)
    dev_options = replace(options, split=eval_split, fraction=None, max_examples=None)
    dev = prepare_for(loaded, task, dev_options)
    evaluation = evaluate(loaded.model, dev.batches(options.batch_size), dev.kind, task.metric,
                          progress=progress, total=dev.num_batches(options.batch_size))
    return {
        "task": options.task,
        "seed": config.seed,
        "training": config_record(config),
        "data": {k: v for k, v in asdict(options).items() if k != "task"},
        "train_examples": len(train),
        "steps": result.steps,
        "train_loss_last_epoch": result.mean_loss_last_epoch,
        "seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "trainable_parameters": result.trainable_parameters,
        "frozen_parameters": result.frozen_parameters,
        "processes": accelerator.num_processes,
        "eval_split": eval_split,
        "eval_examples": evaluation.num_examples,
        "metrics": evaluation.metrics,
        "main_metric": evaluation.main,
        "eval_loss": evaluation.mean_loss,
        "versions": versions(),
    }


def finetune_job(
    model: str, options: DataOptions, config, out: str | None, *, eval_split: str = "dev",
    device: str | None = None, progress: bool = False,
) -> dict:
    """Fine-tune a checkpoint on a task's training split, score it on `eval_split`, and save
    checkpoint + `metrics.json` to `out` (atomically, from the main process; `out=None`
    keeps only the metrics).

    Example:
        >>> finetune_job("base/", DataOptions("rte", data_dir=glue), TrainingConfig(seed=1),
        ...              "runs/rte-seed1")
    """
    from headcount.checkpoints import check_empty_target, save_pruned_atomically

    config.validate()
    if out is not None:
        check_empty_target(out)
    task = options.resolve()
    if task.is_mlm:
        raise ConfigError(
            f"fine-tuning is for classification and regression tasks, not {task.name}")
    accelerator = make_accelerator(device)
    with warnings.catch_warnings():
        # A pre-trained checkpoint has no task head yet: training one is the point here.
        warnings.filterwarnings("ignore", ".*no trained classification head", UserWarning)
        loaded = load_for_task(model, task, device=accelerator.device, seed=config.seed)
    from headcount.weight_pruning import masks_from_zeros, recorded_pruning, sparsity_report

    # A checkpoint of `headcount weights-prune`: fine-tune it with its zeros held at 0.
    pruning = recorded_pruning(loaded.model)
    masks = masks_from_zeros(loaded.model) if pruning else None
    scores = train_and_score(loaded, task, options, config, eval_split=eval_split,
                             accelerator=accelerator, progress=progress, weight_masks=masks)
    record = {"model": model, "new_head": loaded.new_head, **scores}
    if pruning:
        record["weight_pruning"] = {
            **pruning, "sparsity_after_training": sparsity_report(loaded.model)["sparsity"]}
    if out is not None and accelerator.is_main_process:
        save_pruned_atomically(loaded.model, out, loaded.tokenizer, {"metrics.json": record})
    accelerator.wait_for_everyone()
    return record
