"""`headcount weights-prune` and `headcount sparsity-curve`: unstructured weight-magnitude
pruning (Gordon et al. 2020; jobs in `headcount.jobs.weights`)."""

from __future__ import annotations

from headcount.choices import DEFAULT_SPARSITIES, SCOPES
from headcount.cli._shared import (
    add_device_flag,
    add_model_and_data_flags,
    add_model_argument,
    check_output,
    data_options,
    is_main_process,
    print_rows_written,
    show_progress,
)

SCOPE_HELP = (f"{' or '.join(SCOPES)}; global: the smallest |w| over all encoder weight "
              "matrices together; layer: the same share in each matrix (default global)")


def add_weights_commands(commands) -> None:
    """Register `weights-prune` and `sparsity-curve` on `commands` (the `headcount`
    subparsers)."""
    prune = commands.add_parser(
        "weights-prune", help="zero the smallest encoder weights (magnitude pruning)",
        description="Unstructured magnitude pruning (Gordon et al. 2020) of the weight "
                    "matrices of the encoder's layers (attention and feed-forward; not the "
                    "embeddings, pooler, heads, biases or LayerNorm): exactly round(s*N) "
                    "weights become 0. The checkpoint keeps its own head and is saved with "
                    "weight_pruning.json; `headcount finetune` keeps its zeros at 0.",
    )
    add_model_argument(prune)
    prune.add_argument("--sparsity", type=float, required=True,
                       help="share of the encoder's weights to zero, in [0, 1)")
    prune.add_argument("--scope", default="global", help=SCOPE_HELP)
    add_device_flag(prune, default="cpu")
    prune.add_argument("--out", required=True, help="directory of the pruned checkpoint")
    prune.set_defaults(run=_weights_prune)

    curve = commands.add_parser(
        "sparsity-curve", help="evaluate at several weight-pruning sparsities",
        description="Prune the encoder's weights by magnitude to each sparsity (each level "
                    "from the original weights) and evaluate; CSV rows with the metric, its "
                    "value relative to sparsity 0, and the mean loss (for mlm:PATH, recall@1 "
                    "and the masked-LM loss).",
    )
    add_model_and_data_flags(curve, default_split="dev")
    curve.add_argument("--sparsities", type=float, nargs="+", default=list(DEFAULT_SPARSITIES),
                       help="levels in [0, 1) (default 0 0.1 ... 0.9; 0 is always added)")
    curve.add_argument("--scope", default="global", help=SCOPE_HELP)
    curve.add_argument("--out", required=True, help="curve.csv to write")
    curve.set_defaults(run=_sparsity_curve)


def _weights_prune(args) -> None:
    from headcount.jobs.weights import weight_prune_job

    record = weight_prune_job(args.model, args.out, sparsity=args.sparsity, scope=args.scope,
                              device=args.device)
    achieved = record["achieved"]
    print(f"zeroed {record['pruned']:,} of {achieved['size']:,} encoder weights "
          f"({args.scope}, sparsity {achieved['sparsity']:.4f} for {args.sparsity:g} "
          f"requested); wrote {args.out}")


def _sparsity_curve(args) -> None:
    from headcount.jobs.weights import sparsity_curve_job
    from headcount.records import write_sparsity_csv

    check_output(args.out)
    rows = sparsity_curve_job(args.model, data_options(args), sparsities=args.sparsities,
                              scope=args.scope, device=args.device,
                              progress=show_progress(args))
    if not is_main_process():
        return
    write_sparsity_csv(args.out, rows)
    for row in rows:
        if row["main"]:
            print(f"sparsity {row['sparsity_achieved']:.3f}: {row['metric']}={row['value']:.4f} "
                  f"(relative {row['relative']:.3f}, loss {row['mean_loss']:.4f})")
    print_rows_written(rows, args.out)
