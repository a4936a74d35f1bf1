"""The `finetune` job, and the fine-tune-then-score step that the study reuses."""

from __future__ import annotations

import warnings
from dataclasses import asdict, replace

import torch

from headcount.data import prepare_data
from headcount.errors import ConfigError
from headcount.evaluation import evaluate
from headcount.io import versions
from headcount.jobs.prepared import DataOptions, load_for_task, prepare_for
from headcount.models import LoadedModel
from headcount.tasks.registry import Task


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
    from headcount.training import config_record, finetune

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
        "train_loss_quarters": list(result.loss_quarters),
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
        loaded = load_for_task(model, task, device=accelerator.device, seed=config.seed,
                               options=options)
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
