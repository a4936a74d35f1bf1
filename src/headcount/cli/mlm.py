"""`headcount fit-mlm-head`: give a checkpoint without a masked-LM head a fitted one (job in
`headcount.jobs.mlm`, which writes the checkpoint atomically)."""

from __future__ import annotations

from headcount.choices import (
    MLM_HEAD_BATCH_SIZE,
    MLM_HEAD_LEARNING_RATE,
    MLM_HEAD_MAX_BLOCKS,
    MLM_HEAD_STEPS,
)
from headcount.cli._shared import (
    add_device_flag,
    add_model_argument,
    add_quiet_flag,
    show_progress,
)


def add_mlm_head_command(commands) -> None:
    """Register `fit-mlm-head` on `commands` (the `headcount` subparsers)."""
    fit = commands.add_parser(
        "fit-mlm-head", help="fit a missing masked-LM head on the frozen encoder",
        description="For checkpoints without a masked-LM head (e.g. all-MiniLM-L6-v2): load "
                    "with a new head, freeze the encoder (word embeddings included, so the "
                    "tied decoder stays equal to them), fit the head's other parameters on "
                    "masked-LM blocks of a text, report held-out recall@1 before and after "
                    "(every 10th block is held out), and save the checkpoint with "
                    "mlm_head.json. The result can be scored with --task mlm:PATH.",
    )
    add_model_argument(fit)
    fit.add_argument("--text", required=True,
                     help="text file, or directory of .txt files, to fit the head on")
    fit.add_argument("--steps", type=int, default=MLM_HEAD_STEPS,
                     help=f"optimisation steps (default {MLM_HEAD_STEPS})")
    fit.add_argument("--batch-size", type=int, default=MLM_HEAD_BATCH_SIZE,
                     help=f"blocks per step (default {MLM_HEAD_BATCH_SIZE})")
    fit.add_argument("--max-length", type=int, default=128,
                     help="tokens per block (default 128)")
    fit.add_argument("--lr", type=float, default=MLM_HEAD_LEARNING_RATE,
                     help=f"peak learning rate of AdamW (default {MLM_HEAD_LEARNING_RATE:g})")
    fit.add_argument("--max-examples", type=int, default=MLM_HEAD_MAX_BLOCKS,
                     help=f"use at most N blocks of the text (seeded random choice, held-out "
                          f"ones included; default {MLM_HEAD_MAX_BLOCKS})")
    fit.add_argument("--seed", type=int, default=0,
                     help="seed of the new head, the masking and the block order")
    add_device_flag(fit)
    add_quiet_flag(fit)
    fit.add_argument("--out", required=True, help="directory for the checkpoint")
    fit.set_defaults(run=_fit_mlm_head)


def _fit_mlm_head(args) -> None:
    from headcount.jobs.mlm import fit_mlm_head_job
    from headcount.mlm_head import HeadFit

    fit = HeadFit(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                  lr=args.lr, seed=args.seed, max_examples=args.max_examples)
    record = fit_mlm_head_job(args.model, args.text, args.out, fit, device=args.device,
                              progress=show_progress(args))
    before, after = record["held_out"]["before"], record["held_out"]["after"]
    print(f"held-out recall@1 {before['recall@1']:.4f} -> {after['recall@1']:.4f} "
          f"(loss {before['loss']:.3f} -> {after['loss']:.3f}, "
          f"{record['held_out_masked_tokens']} masked tokens in {record['held_out_blocks']} "
          f"blocks); fitted {record['trainable_parameters']:,} head parameters "
          f"({len(record['missing_keys'])} weights were missing) in {record['steps']} steps, "
          f"{record['seconds']:.0f} s; wrote {args.out}")
