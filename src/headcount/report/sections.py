"""Sections of the report on the reference study (Chiang & Chen): the pruning curves, recall,
drift, correlation, frozen-layer and pruned fine-tuning sections, each a figure per model
with the aggregated numbers behind it (`SECTIONS`, in report order). Each builder takes
(tables, run_dir, figures) and returns None when its table is missing or empty.

Example:
    >>> recall_section({}, Path("runs/demo"), FigureSaver(Path("runs/demo"), [])) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from headcount.drift_plots import drift_layer_means
from headcount.report.aggregate import (
    CurveGroup,
    correlation_summary,
    curve_groups,
    curve_kind,
    recall_points,
    recall_reached,
    recall_seeds,
    stage_order,
)
from headcount.report.canvas import FigureSaver
from headcount.report.figures import (
    figure_correlation,
    figure_curves,
    figure_drift,
    figure_freezing,
    figure_pruned_finetune,
    figure_recall,
)
from headcount.report.format import (
    MISSING,
    MLM_RETAIN,
    NORMALIZATION_ORDER,
    PAPER_MAX_ABS_R,
    RECALL_TARGET,
    RETAIN,
    STAGE_NAMES,
    as_number,
    as_text,
    fmt,
    fmt_ms,
    fmt_ratio,
    fmt_sig,
    fmt_stats,
    group_rows,
    layer_sort_key,
    models_in,
    pct,
    pick_normalization,
    rows_of_model,
    seed_count,
    table_rows,
    unique,
)
from headcount.report.render import Block, Section, Table, table_links
from headcount.report.verdicts import caveats, convergence_problem, masked_lm_problem


def _per_model(rows: list[dict], figures: FigureSaver, name: str,
               draw: Callable) -> Iterator[tuple[object, list[dict], str | None]]:
    """(model, its rows, the stem of its figure) for each model of `rows`, in order; the
    figure NAME-MODEL, `draw(rows, model)`, is saved before the model's tables are built."""
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        stem = figures.save(f"{name}-{model}", lambda m=model: draw(rows, m))
        yield model, of_model, stem


# --------------------------------------------------------------------------------------
# Pruning curves (Figures 1 and 2)


def _wide_ratio_table(groups: list[CurveGroup], *, with_task: bool) -> Table:
    keys = sorted({point.key for group in groups for point in group.points})
    columns = ["ratio"] + [(f"{group.task} " if with_task else "") + group.label
                           for group in groups]
    rows = []
    for key in keys:
        row = [fmt_ratio(key)]
        for group in groups:
            point = next((p for p in group.points if abs(p.key - key) < 1e-9), None)
            row.append(MISSING if point is None else fmt(point.mean))
        rows.append(row)
    metrics = ", ".join(unique(group.metric for group in groups))
    return Table(columns, rows, f"Mean relative {metrics} over seeds at each ratio of heads "
                 "pruned (requested ratio).")


def _retained_pivot(groups: list[CurveGroup]) -> Table:
    """Per task: the largest ratio pruned up to which each variant keeps >= RETAIN."""
    labels = unique(group.label for group in groups)
    table = Table(["task", "metric", "seeds"] + labels, [],
                  f"Largest ratio of heads pruned up to which the mean relative performance "
                  f"over seeds stays ≥ {pct(RETAIN)}, per normalisation ({MISSING}: below "
                  "already at the first ratio).")
    for task in unique(group.task for group in groups):
        of_task = [group for group in groups if group.task == task]
        row = [as_text(task), of_task[0].metric, str(max(g.seeds for g in of_task))]
        for label in labels:
            group = next((g for g in of_task if g.label == label), None)
            kept = None if group is None else group.retained(RETAIN)[0]
            row.append(MISSING if kept is None else pct(kept))
        table.rows.append(row)
    return table


def _pretrain_summary(groups: list[CurveGroup]) -> Table:
    """Per variant of the masked-LM curve: how far it keeps RETAIN and MLM_RETAIN."""
    summary = Table(["normalisation", "metric", "seeds", f"≥ {pct(RETAIN)} up to",
                     f"≥ {pct(MLM_RETAIN)} up to", f"< {pct(MLM_RETAIN)} from"], [],
                    "Largest ratio of heads pruned up to which the mean relative "
                    "performance over seeds stays above the threshold, and the first "
                    "ratio below it.")
    for group in groups:
        kept, _ = group.retained(RETAIN)
        kept75, below75 = group.retained(MLM_RETAIN)
        summary.rows.append([
            group.label + ("" if group.task in ("mlm", None) else f" ({group.task})"),
            group.metric, str(group.seeds), MISSING if kept is None else pct(kept),
            MISSING if kept75 is None else pct(kept75),
            "never" if below75 is None else pct(below75)])
    return summary


def curves_section(tables: dict, run_dir: Path, figures: FigureSaver,
                   curve: str) -> Section | None:
    """Figure 1 (`curve="downstream"`) or Figure 2 (`"pretrain"`) with its numbers."""
    rows = [row for row in table_rows(tables, "curves") if curve_kind(row) == curve]
    groups = [g for g in curve_groups(rows) if g.curve == curve]
    if not groups:
        return None
    if curve == "downstream":
        section = Section("curves-downstream", "Pruning: downstream tasks (Figure 1)", [
            "Relative performance (main metric, relative to the unpruned fine-tuned model) "
            "against the ratio of attention heads pruned, least important first. One dotted "
            "line per seed, one colour per normalisation of the importance scores; the grey "
            f"dashed line marks {pct(RETAIN)}."])
    else:
        section = Section("curves-pretrain", "Pruning: masked language model (Figure 2)", [
            "Relative masked-LM performance against the ratio of heads pruned, least "
            "important (for the masked LM) first; one dotted line per seed. The dash-dotted "
            f"line marks {pct(MLM_RETAIN)}, the paper's guideline."])
    if curve == "pretrain":
        section.paragraphs += caveats({model: masked_lm_problem(rows, model)
                                       for model in unique(g.model for g in groups)})
    for model in unique(g.model for g in groups):
        of_model = [g for g in groups if g.model == model]
        stem = figures.save(f"curves-{curve}-{model}",
                            lambda m=model: figure_curves(rows, m, curve))
        summary = (_retained_pivot(of_model) if curve == "downstream"
                   else _pretrain_summary(of_model))
        ratios = _wide_ratio_table(of_model, with_task=len({g.task for g in of_model}) > 1)
        what = "downstream" if curve == "downstream" else "masked-LM"
        section.blocks.append(Block(
            as_text(model), stem, f"{model}: relative {what} performance vs ratio of heads "
            "pruned.",
            [summary, ratios]))
    section.links = table_links(run_dir, "curves")
    return section


# --------------------------------------------------------------------------------------
# Recall (Figure 3)


def _recall_summary(of_model: list[dict], normalize) -> Table:
    """Per task: the smallest x at which the mean recall reaches RECALL_TARGET, per
    normalisation, and the mean recall at the guideline x = MLM_RETAIN when measured."""
    has_guideline = any(abs(x - MLM_RETAIN) < 1e-9 for x, *_ in recall_points(of_model))
    normalizations = unique((r.get("normalize") for r in of_model), NORMALIZATION_ORDER)
    summary = Table(["task", "threshold", "seeds"]
                    + [as_text(n) for n in normalizations]
                    + ([f"recall at {fmt_ratio(MLM_RETAIN)} ({normalize})"]
                       if has_guideline else []), [],
                    f"Smallest x at which the mean recall reaches {pct(RECALL_TARGET)}, per "
                    "normalisation" + (f"; the mean recall at x = {fmt_ratio(MLM_RETAIN)}."
                                       if has_guideline else "."))
    for (task,), members in group_rows(of_model, "task").items():
        row = [as_text(task), fmt(as_number(members[0].get("threshold")), 2),
               str(recall_seeds(members))]
        for norm in normalizations:
            of_norm = [r for r in members if r.get("normalize") == norm]
            reached = recall_reached(of_norm)
            row.append(MISSING if not of_norm else "never" if reached is None
                       else fmt_ratio(reached))
        if has_guideline:
            row.append(fmt(next((mean for x, mean, _, _ in recall_points(
                [r for r in members if r.get("normalize") == normalize])
                if abs(x - MLM_RETAIN) < 1e-9), None)))
        summary.rows.append(row)
    return summary


def _recall_table(of_model: list[dict], normalize) -> Table:
    """Mean recall ± std at each x, one column per task (normalisation `normalize`)."""
    chosen = group_rows([r for r in of_model if r.get("normalize") == normalize], "task")
    xs = sorted({x for members in chosen.values() for x, *_ in recall_points(members)})
    values = {task: {x: (mean, std) for x, mean, std, _ in recall_points(members)}
              for (task,), members in chosen.items()}
    return Table(["x"] + [as_text(task) for task in values], [
        [fmt_ratio(x)] + [fmt_ms(*values[task].get(x, (None, None)), count=2)
                          for task in values] for x in xs],
        f"Mean recall ± std over seeds ({normalize}).")


def recall_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "recall")
    if not rows:
        return None
    section = Section("recall", "Recall of downstream-important heads (Figure 3)", [
        "Recall (Eq. 5): the share of the heads needed for the downstream threshold "
        "performance that are still kept when the model is pruned, by masked-LM importance, "
        "as far as it keeps a share x of its masked-LM performance. Mean over seeds, "
        "± one standard deviation shaded."])
    section.paragraphs += caveats({model: masked_lm_problem(table_rows(tables, "curves"),
                                                            model) for model in models_in(rows)})
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        normalize = pick_normalization(row.get("normalize") for row in of_model)
        stem = figures.save(f"recall-{model}", lambda m=model: figure_recall(rows, m))
        section.blocks.append(Block(as_text(model), stem, f"{model}: recall vs x ({normalize}).",
                                    [_recall_summary(of_model, normalize),
                                     _recall_table(of_model, normalize)]))
    section.links = table_links(run_dir, "recall")
    return section


# --------------------------------------------------------------------------------------
# Drift (Figure 4) and its correlation with importance (Figure 6)


def _drift_table(of_model: list[dict]) -> Table:
    """Per layer and task: the means over seeds of JS mean, JS max and L2."""
    means = drift_layer_means(of_model)
    layers = sorted(unique(p["layer"] for points in means.values() for p in points),
                    key=layer_sort_key)
    columns = ["layer"]
    for task in means:
        columns += [f"{task} JS mean", f"{task} JS max", f"{task} L2"]
    body = []
    for layer in layers:
        row = [as_text(layer)]
        for points in means.values():
            point = next((p for p in points if p["layer"] == layer), None)
            row += [MISSING if point is None else fmt_sig(point[name])
                    for name in ("js_mean", "js_max", "l2")]
        body.append(row)
    return Table(columns, body, "Mean over seeds of the per-seed JS divergence (mean and max "
                 "over the heads of the layer) and L2 distance.")


def drift_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "drift_layers")
    if not rows:
        return None
    section = Section("drift", "Attention and feature drift per layer (Figure 4)", [
        "Jensen–Shannon divergence between the attention of the pre-trained and the "
        "fine-tuned model on the same downstream inputs, per layer: mean over heads (solid) "
        "and max over heads (dashed); below, the L2 distance between their hidden states. "
        "Each value is the mean of the per-seed values."])
    for model, of_model, stem in _per_model(rows, figures, "drift", figure_drift):
        section.blocks.append(Block(as_text(model), stem, f"{model}: drift per layer.",
                                    [_drift_table(of_model)]))
    section.links = table_links(run_dir, "drift_layers", "drift_heads")
    return section


def correlation_section(tables: dict, run_dir: Path,
                        figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "correlation")
    importance, drift_heads = table_rows(tables, "importance"), table_rows(tables, "drift_heads")
    if not rows and not (importance and drift_heads):
        return None
    section = Section("correlation", "Head importance vs attention drift (Figure 6)", [
        "Each point is a head: its importance (pre-train: masked LM; downstream: the "
        "fine-tuning task) and the JS divergence of its attention between the pre-trained and "
        "the fine-tuned model, with the least-squares line of JS on importance per seed. The "
        f"paper found |r| ≤ {PAPER_MAX_ABS_R:.2f} for all tasks."])
    section.paragraphs += caveats({
        f"{model}'s pre-train importance": masked_lm_problem(table_rows(tables, "curves"),
                                                             model)
        for model in models_in(rows) if any(r.get("importance") == "pretrain" for r in rows)})
    summary = correlation_summary(rows)
    for model in unique([*models_in(rows), *models_in(drift_heads)]):
        stem = figures.save(f"correlation-{model}", lambda m=model: figure_correlation(
            importance, drift_heads, rows, m))
        body = []
        for (m, task, kind, normalize), entry in summary.items():
            if m != model:
                continue
            body.append([
                as_text(task), as_text(kind), as_text(normalize), str(entry["seeds"]),
                fmt(entry["n"], 0),
                fmt_stats(entry["r"]), fmt_stats(entry["rho"]),
                f"{entry['significant']}/{entry['seeds']}", fmt_sig(entry["slope"])])
        block_tables = [Table(["task", "importance", "normalisation", "seeds", "heads",
                               "Pearson r", "Spearman ρ", "seeds with p < 0.05 (r)",
                               "slope"], body, "Mean ± std over seeds.")] if body else []
        if stem or block_tables:
            section.blocks.append(Block(as_text(model), stem,
                                        f"{model}: head importance vs JS divergence.",
                                        block_tables))
    if not section.blocks:
        return None
    section.links = table_links(run_dir, "correlation", "importance")
    return section


# --------------------------------------------------------------------------------------
# Fine-tuning: frozen layers, pruning before or after


def freezing_section(tables: dict, run_dir: Path, figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "freezing")
    if not rows:
        return None
    section = Section("freezing", "Fine-tuning with frozen layers", [
        "Fine-tuning with the parameters of K layers frozen, relative to fine-tuning the whole "
        "model (same task and seed); mean ± std over seeds. The paper froze 5 layers of "
        "RoBERTa-large: 0.91 on CoLA, more than 0.98 on SST-2, QQP and MNLI."])
    finetune = table_rows(tables, "finetune")
    section.paragraphs += caveats({
        f"{model} on {task} with {as_text(k)} frozen layers": convergence_problem(
            finetune, model, task, k)
        for (model, task, k) in group_rows(rows, "model", "task", "freeze_layers")})
    for model, of_model, stem in _per_model(rows, figures, "freezing", figure_freezing):
        body = []
        for (task, k), members in group_rows(of_model, "task", "freeze_layers").items():
            count = seed_count(members)
            body.append([as_text(task), as_text(k), as_text(members[0].get("metric")),
                         str(count), fmt_stats((r.get("value") for r in members), count),
                         fmt_stats((r.get("full_value") for r in members), count),
                         fmt_stats((r.get("relative") for r in members), count)])
        section.blocks.append(Block(as_text(model), stem, f"{model}: fine-tuning with frozen "
                                    "layers.", [Table(["task", "frozen layers", "metric",
                                                       "seeds", "value", "full fine-tuning",
                                                       "relative"], body,
                                                      "Mean ± std over seeds.")]))
    section.links = table_links(run_dir, "freezing")
    return section


def pruned_finetune_section(tables: dict, run_dir: Path,
                            figures: FigureSaver) -> Section | None:
    rows = table_rows(tables, "pruned_finetune")
    if not rows:
        return None
    section = Section("pruned-finetune", "Fine-tuning and pruning", [
        "Relative performance (main metric) of the fine-tuned model with a share of its "
        "heads removed in importance order: pruned, and pruned then fine-tuned again with "
        "the same recipe (relative to the unpruned fine-tuned model); mean ± std over "
        "seeds."])
    for model, of_model, stem in _per_model(rows, figures, "pruned-finetune",
                                            figure_pruned_finetune):
        stages = stage_order(of_model)
        body = []
        for (task, ratio), members in group_rows(of_model, "task", "ratio").items():
            row = [as_text(task), MISSING if as_number(ratio) is None else pct(as_number(ratio)),
                   as_text(members[0].get("metric")), str(seed_count(members))]
            for stage in stages:
                of_stage = [r for r in members if r.get("stage") == stage]
                row.append(fmt_stats((r.get("relative") for r in of_stage), len(of_stage)))
            body.append(row)
        section.blocks.append(Block(as_text(model), stem, f"{model}: pruned fine-tuning.", [
            Table(["task", "heads pruned", "metric", "seeds"]
                  + [STAGE_NAMES.get(s, as_text(s)) for s in stages],
                  body, "Relative performance, mean ± std over seeds.")]))
    section.links = table_links(run_dir, "pruned_finetune")
    return section


SECTIONS = (
    ("pruning curves (downstream)", partial(curves_section, curve="downstream")),
    ("pruning curves (masked LM)", partial(curves_section, curve="pretrain")),
    ("recall", recall_section),
    ("drift", drift_section),
    ("correlation", correlation_section),
    ("freezing", freezing_section),
    ("pruned fine-tuning", pruned_finetune_section),
)
