"""`headcount export` and `headcount migrate`: a checkpoint to ONNX, and a checkpoint pruned
under transformers 4 to a portable one (jobs in `headcount.jobs.checkpoint`)."""

from __future__ import annotations

from headcount.cli._shared import MODEL_HELP
from headcount.io import write_json


def add_checkpoint_commands(commands) -> None:
    """Register `export` and `migrate` on `commands` (the `headcount` subparsers)."""
    export = commands.add_parser(
        "export", help="export a (pruned) checkpoint to ONNX, checked in onnxruntime",
        description="Export the checkpoint with its own head to ONNX (dynamic batch and "
                    "sequence axes; the dynamo exporter, or TorchScript where dynamo fails), "
                    "then run the file in onnxruntime on other inputs and compare with "
                    "PyTorch; the file is written only if they agree.",
    )
    export.add_argument("model", metavar="DIR", help="checkpoint directory (or hub name)")
    export.add_argument("--exporter", default="auto",
                        help="auto (default: dynamo, else torchscript), dynamo or torchscript")
    export.add_argument("--out", required=True, help="model.onnx to write")
    export.add_argument("--record", help="also write the export's record as JSON")
    export.set_defaults(run=_export)

    migrate = commands.add_parser(
        "migrate", help="rewrite a checkpoint pruned under transformers 4 as a portable one",
        description="Checkpoints pruned with transformers 4's prune_heads record the removed "
                    "heads in config.json's pruned_heads, which transformers 5 ignores. "
                    "migrate writes the same weights as a headcount checkpoint that stock "
                    "transformers loads (trust_remote_code=True).",
    )
    migrate.add_argument("model", metavar="DIR", help=MODEL_HELP)
    migrate.add_argument("--out", required=True, help="directory of the portable checkpoint")
    migrate.set_defaults(run=_migrate)


def _export(args) -> None:
    from headcount.jobs.checkpoint import export_job

    record = export_job(args.model, args.out, exporter=args.exporter)
    if args.record:
        write_json(args.record, record)
    print(f"wrote {record['out']} ({record['bytes']:,} bytes, {record['exporter']} exporter, "
          f"{record['parameters']:,} parameters); onnxruntime vs PyTorch max abs difference "
          f"{record['max_abs_diff']:.1e}")


def _migrate(args) -> None:
    from headcount.jobs.checkpoint import migrate_job

    record = migrate_job(args.model, args.out)
    print(f"migrated {args.model}: {record['heads_remaining']} heads kept; wrote {args.out} "
          "(loads with AutoModel*.from_pretrained(DIR, trust_remote_code=True))")
