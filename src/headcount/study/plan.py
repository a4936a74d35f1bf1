"""The study's units in dependency order, and the tables they fill.

Per model: its masked-LM checkpoint (fitted if asked); per seed the masked-LM units, then
per task the reference units (`reference.task_units`), the companion units
(`companion.task_units`) and the compression units (`compression.compress_units`) of the
fine-tuned model, then the companion units of the masked LM; finally recall over seeds.
The order is part of the output: rows are appended in it.
"""

from __future__ import annotations

from collections import defaultdict

from headcount.io import read_json_record
from headcount.study import companion, compression, reference
from headcount.study.config import ModelSpec
from headcount.study.progress import Stages, stage_plan, stages_of
from headcount.study.reference import ModelCurves
from headcount.study.units import Run, UnitContext, mlm_checkpoint

SHARED_LAYERS = "{}: its layers share one set of weights (ALBERT), so "


def run_all(run: Run) -> tuple[dict[str, list[dict]], list[str]]:
    """Every unit of the study (finished ones skipped); the tables and the report's notes.
    Progress is logged as the stages of `stage_plan`, with the time left."""
    tables: dict[str, list[dict]] = defaultdict(list)
    notes: list[str] = []
    heads = {model.name: _heads(model) for model in run.config.models}
    stages = stages_of(run.root, stage_plan(run.config, heads), run.log)
    for model in run.config.models:
        notes += _model_units(run, model, tables, stages)
    return dict(tables), notes


def _model_units(run: Run, model: ModelSpec, tables: dict, stages: Stages) -> list[str]:
    """Every unit of one model; its notes for the report."""
    config = run.config
    freezing = config.analyses.freezing
    shares_layers = bool(freezing or config.orders.names) and _shares_layers(model)
    notes = []
    if freezing and shares_layers:
        notes.append(SHARED_LAYERS.format(model.name) + "the freezing experiment (freeze the "
                     "lowest K layers) does not apply.")
        freezing = ()
    if model.fit_mlm_head:
        stages.begin(("fit", model.name))
    mlm_path = mlm_checkpoint(run, model)
    if model.fit_mlm_head:
        notes.append(_fitted_head_note(run, model))
    curves = ModelCurves()
    for seed in config.seeds:
        _seed_units(UnitContext(run, model, seed), mlm_path, freezing, tables, curves, stages)
    if config.analyses.recall and config.pruning.units == "heads":
        tables["recall"] += reference.recall_rows(model.name, curves,
                                                  config.analyses.recall_threshold)
    elif config.analyses.recall:
        notes.append(f"{model.name}: the curves prune {config.pruning.units}; recall (Eq. 5) "
                     "compares sets of heads, so it was not computed.")
    if config.orders.names and shares_layers:
        notes.append(SHARED_LAYERS.format(model.name) + "the layer-location orders do not "
                     "apply; only random order was run.")
    return notes


def _seed_units(ctx: UnitContext, mlm_path: str, freezing: tuple[int, ...], tables: dict,
                curves: ModelCurves, stages: Stages) -> None:
    """Every unit of one model and seed (`ctx` is on the masked LM)."""
    model, seed = ctx.model.name, ctx.seed
    stages.begin(("mlm", model, seed))
    mlm_scores = reference.pretrain_units(ctx, mlm_path, tables, curves)
    for task in ctx.config.tasks:
        on_task = ctx.on(task)
        stages.begin(("task", model, seed, task.name))
        tuned = reference.task_units(on_task, mlm_scores, freezing, tables, curves)
        stages.begin(("companion", model, seed, task.name))
        companion.task_units(on_task, tuned, tables)
        compression.compress_units(on_task, tuned, tables)
    stages.begin(("mlm companion", model, seed))
    companion.pretrain_units(ctx, mlm_path, tables)


def _fitted_head_note(run: Run, model: ModelSpec) -> str:
    fitted = read_json_record(run.path("mlm-head", model.name, "mlm_head.json"),
                              "MLM head record")
    held_out = fitted["held_out"]
    return (f"{model.name} has no masked-LM head: one was fitted on its frozen encoder "
            f"(headcount fit-mlm-head, {fitted['steps']} steps on {fitted['text']}); "
            f"held-out recall@1 {held_out['before']['recall@1']:.3f} -> "
            f"{held_out['after']['recall@1']:.3f}. The pre-train (masked-LM) results "
            "use this head.")


def _heads(model: ModelSpec) -> int:
    """The model's number of heads (layers x heads per layer), for the stages' costs."""
    from headcount.models import load_config

    config = load_config(model.path)
    return (getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", 12)) * (
        getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 12))


def _shares_layers(model: ModelSpec) -> bool:
    from headcount.arch import family_of
    from headcount.models import load_config

    return family_of(load_config(model.path)).shared_layers
