"""Sections of the report on the reference study (Chiang & Chen): the pruning curves,
recall, drift, correlation, frozen-layer and pruned fine-tuning sections, each a figure per
model with the aggregated numbers behind it, then the fine-tuned models, configuration,
environment and tables. Each builder returns None when its table is missing or empty.

Example:
    >>> _config_section({}) is None
    True
"""

from __future__ import annotations

from pathlib import Path

from headcount.plotting import drift_layer_means
from headcount.report.figures import (
    _Figures,
    figure_correlation,
    figure_curves,
    figure_drift,
    figure_freezing,
    figure_pruned_finetune,
    figure_recall,
)
from headcount.report.findings import (
    CurveGroup,
    _correlation_summary,
    _curve_kind,
    _recall_points,
    _recall_reached,
    _stage_order,
    curve_groups,
)
from headcount.report.format import (
    MISSING,
    MLM_RETAIN,
    NORMALIZATION_ORDER,
    PAPER_MAX_ABS_R,
    RECALL_TARGET,
    RETAIN,
    TABLE_DIR,
    _fmt,
    _fmt_ms,
    _fmt_ratio,
    _fmt_sig,
    _group,
    _is_main,
    _layer_sort_key,
    _mean,
    _models,
    _num,
    _of_model,
    _pct,
    _pick_normalization,
    _rows,
    _seed_count,
    _stats,
    _text,
    _unique,
)
from headcount.report.render import Block, Section, Table


def _table_links(run_dir: Path, name: str) -> list[tuple[str, str]]:
    return [(f"{TABLE_DIR}/{name}{suffix}", f"{TABLE_DIR}/{name}{suffix}")
            for suffix in (".csv", ".parquet")
            if (run_dir / TABLE_DIR / f"{name}{suffix}").is_file()]


def _wide_ratio_table(groups: list[CurveGroup], *, with_task: bool) -> Table:
    keys = sorted({point.key for group in groups for point in group.points})
    columns = ["ratio"] + [(f"{group.task} " if with_task else "") + group.label
                           for group in groups]
    rows = []
    for key in keys:
        row = [_fmt_ratio(key)]
        for group in groups:
            point = next((p for p in group.points if abs(p.key - key) < 1e-9), None)
            row.append(MISSING if point is None else _fmt(point.mean))
        rows.append(row)
    metrics = ", ".join(_unique(group.metric for group in groups))
    return Table(columns, rows, f"Mean relative {metrics} over seeds at each ratio of heads "
                 "pruned (requested ratio).")


def _retained_pivot(groups: list[CurveGroup]) -> Table:
    """Per task: the largest ratio pruned up to which each variant keeps >= RETAIN."""
    labels = _unique(group.label for group in groups)
    table = Table(["task", "metric", "seeds"] + labels, [],
                  f"Largest ratio of heads pruned up to which the mean relative performance "
                  f"over seeds stays ≥ {_pct(RETAIN)}, per normalisation ({MISSING}: below "
                  "already at the first ratio).")
    for task in _unique(group.task for group in groups):
        of_task = [group for group in groups if group.task == task]
        row = [_text(task), of_task[0].metric, str(max(g.seeds for g in of_task))]
        for label in labels:
            group = next((g for g in of_task if g.label == label), None)
            kept = None if group is None else group.retained(RETAIN)[0]
            row.append(MISSING if kept is None else _pct(kept))
        table.rows.append(row)
    return table


def _curves_section(tables: dict, run_dir: Path, figures: _Figures, curve: str) -> Section | None:
    rows = [row for row in _rows(tables, "curves") if _curve_kind(row) == curve]
    groups = [g for g in curve_groups(rows) if g.curve == curve]
    if not groups:
        return None
    if curve == "downstream":
        section = Section("curves-downstream", "Pruning: downstream tasks (Figure 1)", [
            "Relative performance (main metric, relative to the unpruned fine-tuned model) "
            "against the ratio of attention heads pruned, least important first. One dotted "
            "line per seed, one colour per normalisation of the importance scores; the grey "
            f"dashed line marks {_pct(RETAIN)}."])
    else:
        section = Section("curves-pretrain", "Pruning: masked language model (Figure 2)", [
            "Relative masked-LM performance against the ratio of heads pruned, least "
            "important (for the masked LM) first; one dotted line per seed. The dash-dotted "
            f"line marks {_pct(MLM_RETAIN)}, the paper's guideline."])
    for model in _unique(g.model for g in groups):
        of_model = [g for g in groups if g.model == model]
        stem = figures.save(f"curves-{curve}-{model}",
                            lambda m=model: figure_curves(rows, m, curve))
        if curve == "downstream":
            summary = _retained_pivot(of_model)
        else:
            summary = Table(["normalisation", "metric", "seeds", f"≥ {_pct(RETAIN)} up to",
                             f"≥ {_pct(MLM_RETAIN)} up to", f"< {_pct(MLM_RETAIN)} from"], [],
                            "Largest ratio of heads pruned up to which the mean relative "
                            "performance over seeds stays above the threshold, and the first "
                            "ratio below it.")
            for group in of_model:
                kept, _ = group.retained(RETAIN)
                kept75, below75 = group.retained(MLM_RETAIN)
                summary.rows.append([
                    group.label + ("" if group.task in ("mlm", None) else f" ({group.task})"),
                    group.metric, str(group.seeds), MISSING if kept is None else _pct(kept),
                    MISSING if kept75 is None else _pct(kept75),
                    "never" if below75 is None else _pct(below75)])
        ratios = _wide_ratio_table(of_model, with_task=len({g.task for g in of_model}) > 1)
        what = "downstream" if curve == "downstream" else "masked-LM"
        section.blocks.append(Block(
            _text(model), stem, f"{model}: relative {what} performance vs ratio of heads "
            "pruned.",
            [summary, ratios]))
    section.links = _table_links(run_dir, "curves")
    return section


def _recall_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "recall")
    if not rows:
        return None
    section = Section("recall", "Recall of downstream-important heads (Figure 3)", [
        "Recall (Eq. 5): the share of the heads needed for the downstream threshold "
        "performance that are still kept when the model is pruned, by masked-LM importance, "
        "as far as it keeps a share x of its masked-LM performance. Mean over seeds, "
        "± one standard deviation shaded."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        normalize = _pick_normalization(row.get("normalize") for row in of_model)
        stem = figures.save(f"recall-{model}", lambda m=model: figure_recall(rows, m))
        has_guideline = any(abs(x - MLM_RETAIN) < 1e-9 for x, *_ in _recall_points(of_model))
        normalizations = _unique((r.get("normalize") for r in of_model), NORMALIZATION_ORDER)
        summary = Table(["task", "threshold", "seeds"]
                        + [_text(n) for n in normalizations]
                        + ([f"recall at {_fmt_ratio(MLM_RETAIN)} ({normalize})"]
                           if has_guideline else []), [],
                        f"Smallest x at which the mean recall reaches {_pct(RECALL_TARGET)}, per "
                        "normalisation" + (f"; the mean recall at x = {_fmt_ratio(MLM_RETAIN)}."
                                           if has_guideline else "."))
        for (task,), members in _group(of_model, "task").items():
            seeds = max((int(v) for v in (_num(r.get("n")) for r in members) if v is not None),
                        default=0)
            row = [_text(task), _fmt(_num(members[0].get("threshold")), 2), str(seeds)]
            for norm in normalizations:
                of_norm = [r for r in members if r.get("normalize") == norm]
                reached = _recall_reached(of_norm)
                row.append(MISSING if not of_norm else "never" if reached is None
                           else _fmt_ratio(reached))
            if has_guideline:
                row.append(_fmt(next((mean for x, mean, _, _ in _recall_points(
                    [r for r in members if r.get("normalize") == normalize])
                    if abs(x - MLM_RETAIN) < 1e-9), None)))
            summary.rows.append(row)
        chosen = _group([r for r in of_model if r.get("normalize") == normalize], "task")
        xs = sorted({x for members in chosen.values() for x, *_ in _recall_points(members)})
        values = {task: {x: (mean, std) for x, mean, std, _ in _recall_points(members)}
                  for (task,), members in chosen.items()}
        table = Table(["x"] + [_text(task) for task in values], [
            [_fmt_ratio(x)] + [_fmt_ms(*values[task].get(x, (None, None)), count=2)
                               for task in values] for x in xs],
            f"Mean recall ± std over seeds ({normalize}).")
        section.blocks.append(Block(_text(model), stem, f"{model}: recall vs x ({normalize}).",
                                    [summary, table]))
    section.links = _table_links(run_dir, "recall")
    return section


def _drift_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "drift_layers")
    if not rows:
        return None
    section = Section("drift", "Attention and feature drift per layer (Figure 4)", [
        "Jensen–Shannon divergence between the attention of the pre-trained and the "
        "fine-tuned model on the same downstream inputs, per layer: mean over heads (solid) "
        "and max over heads (dashed); below, the L2 distance between their hidden states. "
        "Each value is the mean of the per-seed values."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"drift-{model}", lambda m=model: figure_drift(rows, m))
        means = drift_layer_means(of_model)
        layers = sorted(_unique(p["layer"] for points in means.values() for p in points),
                        key=_layer_sort_key)
        columns = ["layer"]
        for task in means:
            columns += [f"{task} JS mean", f"{task} JS max", f"{task} L2"]
        body = []
        for layer in layers:
            row = [_text(layer)]
            for points in means.values():
                point = next((p for p in points if p["layer"] == layer), None)
                row += [MISSING if point is None else _fmt_sig(point[name])
                        for name in ("js_mean", "js_max", "l2")]
            body.append(row)
        section.blocks.append(Block(_text(model), stem, f"{model}: drift per layer.", [
            Table(columns, body, "Mean over seeds of the per-seed JS divergence (mean and max "
                  "over the heads of the layer) and L2 distance.")]))
    section.links = _table_links(run_dir, "drift_layers") + _table_links(run_dir, "drift_heads")
    return section


def _correlation_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "correlation")
    importance, drift_heads = _rows(tables, "importance"), _rows(tables, "drift_heads")
    if not rows and not (importance and drift_heads):
        return None
    section = Section("correlation", "Head importance vs attention drift (Figure 6)", [
        "Each point is a head: its importance (pre-train: masked LM; downstream: the "
        "fine-tuning task) and the JS divergence of its attention between the pre-trained and "
        "the fine-tuned model, with the least-squares line of JS on importance per seed. The "
        f"paper found |r| ≤ {PAPER_MAX_ABS_R:.2f} for all tasks."])
    summary = _correlation_summary(rows)
    for model in _unique([*_models(rows), *_models(drift_heads)]):
        stem = figures.save(f"correlation-{model}", lambda m=model: figure_correlation(
            importance, drift_heads, rows, m))
        body = []
        for (m, task, kind, normalize), entry in summary.items():
            if m != model:
                continue
            body.append([
                _text(task), _text(kind), _text(normalize), str(entry["seeds"]),
                _fmt(entry["n"], 0),
                _fmt_ms(*_stats(entry["r"])[:2], count=len(entry["r"]), digits=3),
                _fmt_ms(*_stats(entry["rho"])[:2], count=len(entry["rho"]), digits=3),
                f"{entry['significant']}/{entry['seeds']}", _fmt_sig(entry["slope"])])
        block_tables = [Table(["task", "importance", "normalisation", "seeds", "heads",
                               "Pearson r", "Spearman ρ", "seeds with p < 0.05 (r)",
                               "slope"], body, "Mean ± std over seeds.")] if body else []
        if stem or block_tables:
            section.blocks.append(Block(_text(model), stem,
                                        f"{model}: head importance vs JS divergence.",
                                        block_tables))
    if not section.blocks:
        return None
    section.links = _table_links(run_dir, "correlation") + _table_links(run_dir, "importance")
    return section


def _freezing_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "freezing")
    if not rows:
        return None
    section = Section("freezing", "Fine-tuning with frozen layers", [
        "Fine-tuning with the parameters of K layers frozen, relative to fine-tuning the whole "
        "model (same task and seed); mean ± std over seeds. The paper froze 5 layers of "
        "RoBERTa-large: 0.91 on CoLA, more than 0.98 on SST-2, QQP and MNLI."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"freezing-{model}", lambda m=model: figure_freezing(rows, m))
        body = []
        for (task, k), members in _group(of_model, "task", "freeze_layers").items():
            count = _seed_count(members)
            body.append([_text(task), _text(k), _text(members[0].get("metric")), str(count),
                         _fmt_ms(*_stats(r.get("value") for r in members)[:2], count=count),
                         _fmt_ms(*_stats(r.get("full_value") for r in members)[:2],
                                 count=count),
                         _fmt_ms(*_stats(r.get("relative") for r in members)[:2],
                                 count=count)])
        section.blocks.append(Block(_text(model), stem, f"{model}: fine-tuning with frozen "
                                    "layers.", [Table(["task", "frozen layers", "metric",
                                                       "seeds", "value", "full fine-tuning",
                                                       "relative"], body,
                                                      "Mean ± std over seeds.")]))
    section.links = _table_links(run_dir, "freezing")
    return section


def _pruned_finetune_section(tables: dict, run_dir: Path,
                             figures: _Figures) -> Section | None:
    rows = _rows(tables, "pruned_finetune")
    if not rows:
        return None
    section = Section("pruned-finetune", "Fine-tuning and pruning", [
        "Relative performance (main metric) of the unpruned model and of the pruned models of "
        "the study's stages 'pruned-before' and 'pruned-after' (pruning before or after "
        "fine-tuning), mean ± std over seeds."])
    for model in _models(rows):
        of_model = _of_model(rows, model)
        stem = figures.save(f"pruned-finetune-{model}",
                            lambda m=model: figure_pruned_finetune(rows, m))
        stages = _stage_order(of_model)
        body = []
        for (task, ratio), members in _group(of_model, "task", "ratio").items():
            row = [_text(task), MISSING if _num(ratio) is None else _pct(_num(ratio)),
                   _text(members[0].get("metric")), str(_seed_count(members))]
            for stage in stages:
                of_stage = [r for r in members if r.get("stage") == stage]
                row.append(_fmt_ms(*_stats(r.get("relative") for r in of_stage)[:2],
                                   count=len(of_stage)))
            body.append(row)
        section.blocks.append(Block(_text(model), stem, f"{model}: pruned fine-tuning.", [
            Table(["task", "heads pruned", "metric", "seeds"] + [_text(s) for s in stages],
                  body, "Relative performance, mean ± std over seeds.")]))
    section.links = _table_links(run_dir, "pruned_finetune")
    return section


def _finetune_section(tables: dict, run_dir: Path) -> Section | None:
    rows = [row for row in _rows(tables, "finetune") if _is_main(row)]
    if not rows:
        return None
    body = []
    for (model, task, kind, frozen), members in _group(rows, "model", "task", "kind",
                                                       "freeze_layers").items():
        count = _seed_count(members)
        body.append([_text(model), _text(task), _text(kind),
                     MISSING if frozen in (None, 0) else _text(frozen),
                     _text(members[0].get("metric")), str(count),
                     _fmt_ms(*_stats(r.get("value") for r in members)[:2], count=count),
                     _fmt(_mean(r.get("steps") for r in members), 0),
                     _fmt(_mean(r.get("seconds") for r in members), 1),
                     _fmt(_mean(r.get("examples_per_second") for r in members), 1)])
    return Section("finetune", "Fine-tuned models", [
        "Main metric of every fine-tuning run, mean ± std over seeds; steps, seconds and "
        "throughput are means over seeds."], tables=[Table(
            ["model", "task", "kind", "frozen layers", "metric", "seeds", "value", "steps",
             "seconds", "examples/s"], body)], links=_table_links(run_dir, "finetune"))


def _config_section(meta: dict) -> Section | None:
    text = meta.get("config_text")
    if not text:
        return None
    return Section("configuration", "Configuration", ["The configuration as run (TOML)."],
                   code=str(text))


def _environment_section(meta: dict) -> Section | None:
    environment = meta.get("environment") or {}
    if not environment:
        return None
    rows = []
    for key in ("device", "python", "platform", "git", "started", "finished"):
        if key in environment:
            rows.append([key, _text(environment.get(key))])
    duration = _duration(environment.get("started"), environment.get("finished"))
    if duration:
        rows.append(["duration", duration])
    for key, value in environment.items():
        if key not in ("device", "python", "platform", "git", "started", "finished",
                       "versions"):
            rows.append([str(key), _text(value)])
    section = Section("environment", "Environment", tables=[Table(["", ""], rows)])
    versions = environment.get("versions") or {}
    if versions:
        section.tables.append(Table(["package", "version"],
                                    [[str(k), _text(v)] for k, v in versions.items()],
                                    "Versions."))
    return section


def _duration(started, finished) -> str | None:
    from datetime import datetime

    try:
        seconds = (datetime.fromisoformat(str(finished))
                   - datetime.fromisoformat(str(started))).total_seconds()
    except (TypeError, ValueError):
        return None
    if seconds < 0:
        return None
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {seconds:02d} s"
    return f"{minutes} min {seconds:02d} s"


def _tables_section(tables: dict, run_dir: Path) -> Section | None:
    body, links = [], []
    for name, rows in (tables or {}).items():
        if not rows:
            continue
        files = _table_links(run_dir, name)
        links.extend(files)
        body.append([str(name), str(len(rows)),
                     ", ".join(href for _, href in files) if files else MISSING])
    if not body:
        return None
    return Section("tables", "Tables", ["Every table of the run, in full."],
                   tables=[Table(["table", "rows", "files"], body)])
