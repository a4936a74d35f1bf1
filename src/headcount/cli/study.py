"""`headcount study` and `headcount demo`: a whole study, resumable, with its report
(`headcount.report.run`)."""

from __future__ import annotations


def add_study_command(commands) -> None:
    """Register `study` on `commands` (the `headcount` subparsers)."""
    study = commands.add_parser(
        "study", help="run the whole study of a TOML config (resumable), with a report",
        description="Fine-tuning, importance, pruning curves, recall, drift, correlation, "
                    "freezing and pruned fine-tuning for every model, task and seed of the "
                    "config; tables, figures and report.html in the run directory. Running "
                    "it again resumes where it stopped.",
    )
    study.add_argument("config", help="study configuration (TOML), e.g. examples/glue-local.toml")
    study.add_argument("--out", help="run directory (default runs/<study name>)")
    study.add_argument("--force", action="store_true",
                       help="start afresh in a run directory made by another configuration "
                            "(only ever deletes a headcount run directory; never one that "
                            "another process is writing)")
    study.add_argument("--plan", action="store_true",
                       help="check the config and its models and data, then list every unit "
                            "(model x task x seed x analysis), which are done in the run "
                            "directory, and a rough time for the rest; writes nothing")
    study.add_argument("--quiet", action="store_true", help="no progress output")
    study.set_defaults(run=_study, resumable=True)


def add_demo_command(commands) -> None:
    """Register `demo` on `commands` (the `headcount` subparsers); last in `headcount --help`,
    hence apart from `add_study_command`."""
    demo = commands.add_parser(
        "demo", help="offline demo study: MiniLM on BBC News, on CPU, with a report",
        description="A small real study of all-MiniLM-L6-v2 on BBC News, offline: every "
                    "analysis and figure of the report in about 6 minutes on 2 CPU cores "
                    "(--full: the larger demo, about 30 minutes).",
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--full", action="store_true",
                      help="the larger demo: longer inputs, more examples, ratios and "
                           "sparsities (about 30 minutes on 2 CPU cores)")
    demo.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1)")
    demo.add_argument("--train-examples", type=int,
                      help="BBC News articles to fine-tune on (default 400; --full 600)")
    demo.add_argument("--fit-steps", type=int,
                      help="steps to fit MiniLM's masked-LM head (default 150; --full 300)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--force", action="store_true",
                      help="start afresh if --out holds a run of other settings")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo, resumable=True)


def _study(args) -> None:
    if args.plan:
        from headcount.study.outline import plan_command

        print(plan_command(args.config, args.out))
        return
    from headcount.report.run import study_command

    paths = study_command(args.config, args.out, force=args.force, progress=not args.quiet)
    print(f"report: {paths['html']} (and {paths['markdown']})")


def _demo(args) -> None:
    from headcount.report.run import run_demo

    paths = run_demo(args.out, full=args.full, device=args.device, force=args.force,
                     progress=not args.quiet, seeds=tuple(args.seeds) if args.seeds else None,
                     train_examples=args.train_examples, fit_steps=args.fit_steps)
    print(f"demo finished: open {paths['html']} (Markdown: {paths['markdown']})")
