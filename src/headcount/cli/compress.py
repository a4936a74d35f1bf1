"""`headcount compress`: heads and neurons pruned to a FLOPs, parameter or latency budget
without retraining (job in `headcount.jobs.compress`)."""

from __future__ import annotations

from headcount.choices import BUDGET_KINDS, FISHER_KINDS
from headcount.cli._shared import add_model_and_data_flags, data_options, show_progress


def add_compress_command(commands) -> None:
    """Register `compress` on `commands` (the `headcount` subparsers)."""
    compress = commands.add_parser(
        "compress", help="prune heads and neurons to a FLOPs, parameter or latency budget "
                         "(no retraining)",
        description="Kwon et al. (2022) on exact per-example gradients: the Fisher of the "
                    "head and neuron masks on calibration examples (--task, --split, default "
                    "train), the most important units that fit the budget, each layer's "
                    "mask rearranged with its Fisher block, least-squares scales of the kept "
                    "units that reconstruct each layer of the unpruned model (folded into "
                    "the weights); then the units are removed and the checkpoint saved "
                    "with compress.json. It loads with stock transformers too.",
    )
    add_model_and_data_flags(compress, default_split="train")
    compress.add_argument("--budget", required=True,
                          help=f"KIND=FRACTION of the model's ({', '.join(BUDGET_KINDS)}), "
                               "e.g. flops=0.6")
    compress.add_argument("--seq-length", type=int, default=128,
                          help="tokens per calibration example, and the length the FLOPs and "
                               "latency are counted at (default 128)")
    compress.add_argument("--no-rearrange", action="store_true",
                          help="skip the rearrangement of each layer's mask")
    compress.add_argument("--no-tune", action="store_true",
                          help="skip the least-squares tuning of the kept units")
    compress.add_argument("--fisher", default="per-example",
                          help=f"{' or '.join(FISHER_KINDS)} (default per-example: the exact "
                               "E[g gᵀ]; batch: gradients summed over a batch first, as "
                               "Kwon et al.'s code)")
    compress.add_argument("--eval-split", help="split to measure the metric on before and "
                          "after (default dev)")
    compress.add_argument("--eval-task", help="another task to measure the metric on")
    compress.add_argument("--out", required=True, help="directory of the compressed checkpoint")
    compress.set_defaults(run=_compress, max_examples=2048)


def _compress(args) -> None:
    from headcount.jobs.compress import CompressRequest, compress_job
    from headcount.mask_search import Budget

    request = CompressRequest(
        budget=Budget.parse(args.budget), seq_length=args.seq_length,
        batch_size=args.batch_size, max_examples=args.max_examples,
        rearrange=not args.no_rearrange, tune=not args.no_tune, fisher=args.fisher,
        eval_split=args.eval_split, eval_task=args.eval_task,
    )
    record = compress_job(args.model, data_options(args), request, args.out,
                          device=args.device, progress=show_progress(args))
    metric = record["main_metric"]
    print(f"{record['budget']}: {sum(record['heads_per_layer'])} heads and "
          f"{sum(record['neurons_per_layer'])} neurons kept; FLOPs "
          f"{record['flops_after'] / record['flops_before']:.3f} of the model's, latency "
          f"{record['latency_after_s'] / record['latency_before_s']:.3f}; {metric} "
          f"{record['metric_before']:.4f} -> {record['metric_after']:.4f} "
          f"({sum(record['seconds'].values()):.0f} s); wrote {args.out}")
