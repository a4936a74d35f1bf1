"""Fine-tuning for sequence classification/regression, on accelerate.

The same code runs on CPU, one GPU, and many GPUs or nodes under `accelerate launch` or
`torchrun`: `Accelerator` reads the launcher's environment. `--batch-size` is the global
batch, split across processes (`split_batches`), so the optimisation is the same whatever
the number of processes. Runs are reproducible from the seed on a given device: the seed
fixes the classifier's initialisation, the data order and dropout.

`freeze_layers=K` freezes the embeddings and the lowest K encoder layers (the reference
study's freezing experiment). ALBERT's layers all share one set of weights, so freezing
"the lowest K" would freeze every layer; it is refused. A physically pruned checkpoint
fine-tunes as it is: its removed heads have no weights, so they stay removed.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from headcount.arch import encoder_of, family_of, layer_stack
from headcount.data import EncodedData
from headcount.errors import ConfigError, UnsupportedModelError
from headcount.forward import task_outputs


@dataclass(frozen=True)
class TrainingConfig:
    epochs: float = 3.0
    learning_rate: float = 2e-5
    batch_size: int = 32          # global batch, split across processes
    warmup: float = 0.06          # share of the optimisation steps with a rising rate
    weight_decay: float = 0.01
    max_steps: int | None = None  # stop early (smoke runs, benchmarks)
    freeze_layers: int = 0
    seed: int = 0

    def validate(self) -> None:
        problems = []
        if self.epochs <= 0:
            problems.append(f"--epochs {self.epochs} must be positive")
        if self.learning_rate <= 0:
            problems.append(f"--lr {self.learning_rate} must be positive")
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size} must be at least 1")
        if not 0 <= self.warmup < 1:
            problems.append(f"--warmup {self.warmup} must be in [0, 1)")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps {self.max_steps} must be at least 1")
        if self.freeze_layers < 0:
            problems.append(f"--freeze-layers {self.freeze_layers} must be >= 0")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class TrainingResult:
    steps: int
    examples_seen: int
    mean_loss_last_epoch: float
    seconds: float
    trainable_parameters: int
    frozen_parameters: int
    # Mean training loss over each quarter of the steps (fewer than 4 steps: one per step):
    # whether the loss still fell at the end tells a converged run from an underfit one.
    loss_quarters: tuple[float, ...] = ()

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / self.seconds if self.seconds > 0 else math.nan


def freeze_lower_layers(model: nn.Module, layers: int) -> int:
    """Freeze the embeddings and the lowest `layers` encoder layers; returns how many
    parameters were frozen. 0 freezes nothing."""
    if layers == 0:
        return 0
    family = family_of(model.config)
    if family.shared_layers:
        raise UnsupportedModelError(
            "--freeze-layers: ALBERT's layers share one set of weights, so freezing the lowest "
            f"{layers} would freeze all of them; use --freeze-layers 0"
        )
    stack = list(layer_stack(model))
    if layers > len(stack):
        raise ConfigError(f"--freeze-layers {layers}: the model has {len(stack)} layers")
    frozen = 0
    for module in (encoder_of(model).embeddings, *stack[:layers]):
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


class _Indices(torch.utils.data.Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


def _optimizer(model: nn.Module, config: TrainingConfig) -> tuple[torch.optim.Optimizer, list]:
    """AdamW over the trainable parameters, without weight decay on biases and LayerNorm
    weights; also the trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() > 1]
    no_decay = [p for p in trainable if p.dim() <= 1]  # biases and LayerNorm weights
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    return optimizer, trainable


def _total_steps(config: TrainingConfig, steps_per_epoch: int) -> int:
    total = math.ceil(config.epochs * steps_per_epoch)
    return total if config.max_steps is None else min(total, config.max_steps)


def _train_steps(model, loader, optimizer, scheduler, accelerator, kind: str, total_steps: int,
                 progress: bool) -> tuple[int, int, list[float], list[float]]:
    """Run `total_steps` optimizer steps over epochs of `loader`; (steps, examples seen,
    losses of the last epoch, losses of every step)."""
    model.train()
    step, seen, epoch_losses, losses = 0, 0, [], []
    bar = tqdm(total=total_steps, disable=not (progress and accelerator.is_main_process),
               desc="fine-tune", unit="step")
    while step < total_steps:
        epoch_losses = []
        for batch in loader:
            loss = task_outputs(model, batch, kind).losses.mean()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += batch["input_ids"].shape[0] * accelerator.num_processes
            epoch_losses.append(float(loss.detach()))
            losses.append(epoch_losses[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")
            if step >= total_steps:
                break
    bar.close()
    return step, seen, epoch_losses, losses


def loss_quarters(losses: list[float]) -> tuple[float, ...]:
    """The mean of each quarter of `losses` (in step order; one value per step when there
    are fewer than 4).

    Example:
        >>> loss_quarters([4.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
        (3.5, 2.0, 1.0, 1.0)
    """
    parts = min(4, len(losses))
    if parts == 0:
        return ()
    bounds = [round(i * len(losses) / parts) for i in range(parts + 1)]
    return tuple(sum(losses[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:], strict=False))


def finetune(
    model: nn.Module,
    train: EncodedData,
    config: TrainingConfig,
    *,
    accelerator=None,
    progress: bool = False,
    weight_masks: dict[str, torch.Tensor] | None = None,
) -> TrainingResult:
    """Fine-tune `model` on `train` (all examples; each process of a launch sees its share of
    every global batch) with AdamW and a linear schedule with warm-up.

    `weight_masks` (from `headcount.weight_pruning`: weight name -> keep mask) keeps the
    weights pruned by magnitude exactly 0 throughout.

    Example:
        >>> result = finetune(model, train, TrainingConfig(epochs=3, seed=1))
        >>> result.examples_per_second
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from transformers import get_linear_schedule_with_warmup

    config.validate()
    if accelerator is None:
        accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True))
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(
            f"--batch-size {config.batch_size} is not divisible by the "
            f"{accelerator.num_processes} processes"
        )
    set_seed(config.seed)
    frozen = freeze_lower_layers(model, config.freeze_layers)
    optimizer, trainable = _optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(_Indices(len(train)), batch_size=config.batch_size, shuffle=True,
                        generator=generator, collate_fn=train.collate)
    total_steps = _total_steps(config, len(loader))
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(config.warmup * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    fixed = nullcontext()
    if weight_masks is not None:
        from headcount.weight_pruning import masks_fixed

        # Hooks on the same parameters and on the torch optimizer inside accelerate's wrapper;
        # removed when training ends, even after an error.
        fixed = masks_fixed(accelerator.unwrap_model(model), weight_masks, optimizer)
    started = time.perf_counter()
    with fixed:
        step, seen, epoch_losses, losses = _train_steps(model, loader, optimizer, scheduler,
                                                accelerator, train.kind, total_steps, progress)
    seconds = time.perf_counter() - started
    model = accelerator.unwrap_model(model)
    model.eval()
    return TrainingResult(
        steps=step, examples_seen=seen,
        mean_loss_last_epoch=sum(epoch_losses) / max(len(epoch_losses), 1),
        seconds=seconds, trainable_parameters=sum(p.numel() for p in trainable),
        frozen_parameters=frozen, loss_quarters=loss_quarters(losses),
    )


def config_record(config: TrainingConfig) -> dict:
    return asdict(config)
