"""`headcount finetune`: fine-tune a checkpoint on a task and score it (job in
`headcount.jobs.train`; runs under accelerate launch / torchrun)."""

from __future__ import annotations

from headcount.cli._shared import (
    add_model_and_data_flags,
    data_options,
    is_main_process,
    metrics_text,
    show_progress,
)


def add_finetune_command(commands) -> None:
    """Register `finetune` on `commands` (the `headcount` subparsers)."""
    finetune = commands.add_parser(
        "finetune", help="fine-tune for sequence classification/regression (accelerate)",
        description="Fine-tune on a task's training split, evaluate on its dev split, save "
                    "the checkpoint and metrics.json. Runs under accelerate launch / torchrun.",
    )
    add_model_and_data_flags(finetune, default_split="train")
    finetune.add_argument("--epochs", type=float, default=3.0)
    finetune.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    finetune.add_argument("--warmup", type=float, default=0.06,
                          help="share of the steps with a rising learning rate")
    finetune.add_argument("--weight-decay", type=float, default=0.01)
    finetune.add_argument("--max-steps", type=int, help="stop after N optimisation steps")
    finetune.add_argument("--freeze-layers", type=int, default=0,
                          help="freeze the embeddings and the lowest K layers")
    finetune.add_argument("--eval-split", default="dev", help="split to evaluate on")
    finetune.add_argument("--out", required=True, help="directory for the checkpoint")
    finetune.set_defaults(run=_finetune)


def _finetune(args) -> None:
    from headcount.jobs.train import finetune_job
    from headcount.training import TrainingConfig

    config = TrainingConfig(
        epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        warmup=args.warmup, weight_decay=args.weight_decay, max_steps=args.max_steps,
        freeze_layers=args.freeze_layers, seed=args.seed,
    )
    record = finetune_job(args.model, data_options(args), config, args.out,
                          eval_split=args.eval_split, device=args.device,
                          progress=show_progress(args))
    if not is_main_process():
        return
    print(f"fine-tuned {record['steps']} steps ({record['examples_per_second']:.1f} examples/s, "
          f"{record['frozen_parameters']:,} parameters frozen); {record['eval_split']}: "
          f"{metrics_text(record['metrics'])}; wrote {args.out}")
    pruned = record.get("weight_pruning")
    if pruned:
        print(f"encoder weights pruned by magnitude, held at 0: sparsity "
              f"{pruned['achieved']:.4f} before training, "
              f"{pruned['sparsity_after_training']:.4f} after")
