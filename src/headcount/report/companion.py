"""Report sections and headline findings of the companion studies: pruning orders
(random, layer location) against importance order, fine-tuning after pruning and
compensation (Budhraja et al.), importance estimators against exact ablation, and
weight-magnitude pruning (Gordon et al.).

Every number is computed from the study's tables: `order_curves`, `curves` (the importance
reference), `order_finetune`, `compensation`, `compensation_layers`,
`estimator_agreement`, `sparsity`. Means and standard deviations are over seeds (and, for
random order, over its draws too): population standard deviation, as in the rest of the
report.
"""

from __future__ import annotations

from pathlib import Path

from headcount.plotting import mpl_text
from headcount.report.figures import _Figures, _new_figure, _panel_grid
from headcount.report.findings import _curve_kind
from headcount.report.format import (
    MISSING,
    RETAIN,
    TASK_COLOURS,
    _fmt,
    _fmt_ms,
    _fmt_sig,
    _group,
    _is_main,
    _models,
    _num,
    _of_model,
    _pct,
    _pick_normalization,
    _rows,
    _stats,
    _text,
    _unique,
)
from headcount.report.render import Block, Section, Table
from headcount.report.sections import _table_links

IMPORTANCE = "importance"
ORDER_STYLE = {  # colour, line style: importance solid black, random grey, layers coloured
    IMPORTANCE: ("black", "-"), "gradient": ("black", "-"), "random": ("tab:gray", "-"),
    "top": ("tab:blue", "--"),
    "bottom": ("tab:orange", "--"), "middle": ("tab:green", "--"),
    "avoid-middle": ("tab:red", "--"), "consecutive": ("tab:purple", ":"),
    "non-adjacent": ("tab:brown", ":"), "ablation": ("tab:cyan", "-."),
    "entropy": ("tab:olive", "-."), "confidence": ("tab:pink", "-."),
    "magnitude": ("darkgoldenrod", "-."),
}


# --------------------------------------------------------------------------------------
# Order curves: mean relative performance per (model, task, order) and ratio


def order_curve_table(tables: dict) -> dict[tuple, dict[float, tuple]]:
    """(model, task, order, family) -> {ratio requested: (mean relative, std, n, mean ratio
    pruned)} over seeds and draws. Importance order comes from the study's main downstream
    curves with the first normalisation (l1 when present)."""
    rows = [row for row in _rows(tables, "order_curves") if _is_main(row)]
    main = [row for row in _rows(tables, "curves")
            if _is_main(row) and _curve_kind(row) == "downstream"]
    method = _pick_normalization(row.get("normalize") for row in main)
    rows += [{**row, "order": IMPORTANCE, "family": "order"} for row in main
             if row.get("normalize") == method]
    curves: dict[tuple, dict[float, tuple]] = {}
    for key, members in _group(rows, "model", "task", "order", "family").items():
        points = {}
        for (ratio,), at in _group(members, "ratio_requested").items():
            mean, std, count = _stats(row.get("relative") for row in at)
            pruned, _, _ = _stats(row.get("ratio_pruned") for row in at)
            if mean is not None and _num(ratio) is not None:
                points[float(ratio)] = (mean, std, count, pruned)
        if points:
            curves[key] = dict(sorted(points.items()))
    return curves


def _retained_up_to(points: dict[float, tuple], threshold: float = RETAIN) -> float | None:
    """Largest ratio pruned up to which the mean stays >= threshold at every ratio."""
    kept = None
    for ratio, (mean, *_rest) in points.items():
        if mean < threshold:
            break
        kept = ratio
    return kept


def _area(points: dict[float, tuple]) -> float:
    """Mean relative performance over the ratios measured (one number per curve)."""
    return sum(p[0] for p in points.values()) / len(points)


def _order_sort(order: str) -> tuple:
    names = list(ORDER_STYLE)
    return (names.index(order) if order in names else len(names), order)


def figure_orders(curves: dict[tuple, dict], model, family: str):
    """One panel per task: relative performance against the ratio of heads pruned, one line
    per order (mean over seeds and draws, ±1 std band), importance order in black."""
    keys = [k for k in curves if k[0] == model and (k[3] == family or k[2] == IMPORTANCE)]
    tasks = _unique(k[1] for k in keys)
    if not tasks or len(keys) <= len(tasks):
        return None
    figure = _new_figure(4.2 * min(3, len(tasks)) + 0.3, 3.6 * -(-len(tasks) // 3) + 1.0)
    axes, columns = _panel_grid(figure, len(tasks), max_columns=3, sharey=True)
    handles = {}
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        for key in sorted((k for k in keys if k[1] == task), key=lambda k: _order_sort(k[2])):
            order = key[2]
            colour, style = ORDER_STYLE.get(order, (None, "-"))
            points = curves[key]
            xs = [p[3] if p[3] is not None else r for r, p in points.items()]
            means = [p[0] for p in points.values()]
            (line,) = ax.plot(xs, means, linestyle=style, color=colour, marker=".",
                              label=mpl_text(order), linewidth=1.6 if order == IMPORTANCE
                              else 1.2)
            stds = [p[1] or 0.0 for p in points.values()]
            if any(stds):
                ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                                [m + s for m, s in zip(means, stds, strict=True)],
                                color=line.get_color(), alpha=0.12, linewidth=0)
            handles.setdefault(mpl_text(order), line)
        ax.axhline(RETAIN, color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(mpl_text(task))
        ax.set_xlabel("ratio of heads pruned")
        ax.set_ylabel("relative performance" if index % columns == 0 else "")
        ax.grid(alpha=0.3)
    figure.legend(handles=list(handles.values()), loc="outside lower center",
                  ncols=min(len(handles), 5), frameon=False)
    what = "pruning orders" if family == "order" else "importance estimators"
    figure.suptitle(f"{mpl_text(model)}: {what} (mean over seeds; band ±1 std)")
    return figure


def _orders_table(curves: dict, model, family: str) -> Table:
    keys = sorted((k for k in curves if k[0] == model
                   and (k[3] == family or k[2] == IMPORTANCE)),
                  key=lambda k: (str(k[1]), _order_sort(k[2])))
    ratios = sorted({r for k in keys for r in curves[k]})
    middle = min(ratios, key=lambda r: abs(r - 0.5)) if ratios else None
    table = Table(["task", "order" if family == "order" else "ranked by", "curves",
                   f"≥ {_pct(RETAIN)} up to", "mean relative (all ratios)",
                   f"relative at {_pct(middle) if middle is not None else MISSING}"], [],
                  "Mean over seeds (and draws); the mean relative performance over all ratios "
                  "summarises a whole curve.")
    for key in keys:
        points = curves[key]
        kept = _retained_up_to(points)
        at_middle = points.get(middle)
        table.rows.append([
            _text(key[1]), _text(key[2]), str(max(p[2] for p in points.values())),
            MISSING if kept is None else _pct(kept), _fmt(_area(points)),
            MISSING if at_middle is None else _fmt_ms(at_middle[0], at_middle[1], at_middle[2])])
    return table


def orders_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    curves = order_curve_table(tables)
    if not any(k[3] == "order" and k[2] != IMPORTANCE for k in curves):
        return None
    section = Section("orders", "Pruning orders: importance, random and layer location", [
        "Heads removed from the fine-tuned model in importance order (least important "
        "first, black) and in orders that ignore importance (Budhraja et al.): random (grey, "
        "several draws), by layer location (top = highest layers first, bottom, middle, "
        "avoid-middle = outermost layers first; whole layers in turn), a growing block of "
        "consecutive layers, and non-adjacent layers first. Same examples and ratios as the "
        "importance curves; no fine-tuning after pruning here (see the next section)."])
    for model in _unique(k[0] for k in curves):
        stem = figures.save(f"orders-{model}", lambda m=model: figure_orders(curves, m, "order"))
        section.blocks.append(Block(_text(model), stem,
                                    f"{model}: relative performance by pruning order.",
                                    [_orders_table(curves, model, "order")]))
    section.links = _table_links(run_dir, "order_curves")
    return section


def orders_findings(tables: dict) -> list[str]:
    curves = order_curve_table(tables)
    sentences = []
    for (model, task), keys in _group(
            [{"model": k[0], "task": k[1], "key": k} for k in curves
             if k[3] == "order"], "model", "task").items():
        by_order = {row["key"][2]: curves[row["key"]] for row in keys}
        if IMPORTANCE not in by_order or len(by_order) < 2:
            continue
        areas = {order: _area(points) for order, points in by_order.items()}
        ranked = sorted(areas, key=lambda o: -areas[o])
        parts = [f"{order} {_fmt(areas[order])}" for order in ranked]
        sentence = (f"{model} on {task}: mean relative performance over all pruning ratios "
                    f"by order: {', '.join(parts)}; importance order ranks "
                    f"{ranked.index(IMPORTANCE) + 1} of {len(ranked)}.")
        pairs = [("avoid-middle", "middle"), ("non-adjacent", "consecutive")]
        contrasts = [f"{a} {'>' if areas[a] > areas[b] else '≤'} {b}"
                     for a, b in pairs if a in areas and b in areas]
        if contrasts:
            sentence += " Budhraja et al.'s contrasts: " + "; ".join(contrasts) + "."
        sentences.append(sentence)
    return sentences


# --------------------------------------------------------------------------------------
# Fine-tuning after pruning and compensation


def _finetune_summary(rows: list[dict]) -> dict[tuple, dict]:
    """(model, task, order, ratio) -> {stage: (mean, std, n)} of relative performance."""
    summary: dict[tuple, dict] = {}
    for key, members in _group(rows, "model", "task", "order", "ratio").items():
        summary[key] = {stage: _stats(r.get("relative") for r in members
                                      if r.get("stage") == stage)
                        for stage in ("before", "after")}
    return summary


def order_finetune_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "order_finetune")
    if not rows:
        return None
    summary = _finetune_summary(rows)
    compensation = _group(_rows(tables, "compensation"), "model", "task", "order", "ratio")
    section = Section("order-finetune", "Fine-tuning after pruning, and compensation", [
        "The fine-tuned model with a share of its heads removed in each order, scored before "
        "and after fine-tuning it again with the same recipe (relative to the unpruned "
        "fine-tuned model). Compensation: the gradient importance of every remaining head "
        "is measured before and after that fine-tuning on the same examples, as its share of "
        "the total importance of the remaining heads (raw gradient importance shrinks with the "
        "loss for every head alike). How evenly the gain of share is spread: the part of the "
        "total gain carried by the top 10% of heads (10% if every head gains alike) and the "
        "Gini coefficient of the gains (0 if even, near 1 if one head takes it all)."])
    table = Table(["model", "task", "order", "ratio pruned", "seeds", "relative before",
                   "relative after", "heads left", "top-10% part of the gain", "Gini"], [],
                  "Mean ± std over seeds.")
    for key in sorted(summary, key=lambda k: (str(k[0]), str(k[1]), _order_sort(str(k[2])),
                                              _num(k[3]) or 0)):
        before, after = summary[key]["before"], summary[key]["after"]
        comp = compensation.get(key, [])
        share = _stats(r.get("top10_share") for r in comp)
        gini = _stats(r.get("gini") for r in comp)
        heads = _stats(r.get("heads_remaining") for r in comp)[0]
        table.rows.append([
            _text(key[0]), _text(key[1]), _text(key[2]), _pct(float(key[3])),
            str(max(before[2], after[2])), _fmt_ms(*before), _fmt_ms(*after),
            MISSING if heads is None else str(round(heads)),
            _fmt_ms(*share), _fmt_ms(*gini)])
    section.tables.append(table)
    layers = _rows(tables, "compensation_layers")
    for model in _models(layers):
        stem = figures.save(f"compensation-{model}",
                            lambda m=model: figure_compensation_layers(layers, m))
        if stem:
            section.blocks.append(Block(f"{model}: change per layer", stem,
                                        "Change of each layer's share of the total "
                                        "importance of the remaining heads after fine-tuning "
                                        "(mean over seeds), per order."))
    section.links = (_table_links(run_dir, "order_finetune")
                     + _table_links(run_dir, "compensation")
                     + _table_links(run_dir, "compensation_layers"))
    return section


def figure_compensation_layers(rows: list[dict], model):
    of_model = [r for r in _of_model(rows, model)
                if _num(r.get("share_change")) is not None]
    tasks = _unique(r.get("task") for r in of_model)
    if not tasks:
        return None
    figure = _new_figure(4.2 * min(3, len(tasks)) + 0.3, 3.4 * -(-len(tasks) // 3) + 0.9)
    axes, columns = _panel_grid(figure, len(tasks), max_columns=3, sharey=True)
    handles = {}
    for index, (ax, task) in enumerate(zip(axes, tasks, strict=True)):
        of_task = [r for r in of_model if r.get("task") == task]
        for (order, ratio), members in sorted(_group(of_task, "order", "ratio").items(),
                                              key=lambda item: _order_sort(str(item[0][0]))):
            by_layer = {key[0]: rows for key, rows in _group(members, "layer").items()}
            layers = sorted(by_layer, key=lambda v: _num(v) or 0)
            means = [_stats(r.get("share_change") for r in by_layer[layer])[0]
                     for layer in layers]
            colour, style = ORDER_STYLE.get(str(order), (None, "-"))
            label = f"{order}, {_pct(float(ratio))} pruned"
            (line,) = ax.plot([float(v) for v in layers], means, marker="o", color=colour,
                              linestyle=style, label=mpl_text(label))
            handles.setdefault(mpl_text(label), line)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_title(mpl_text(task))
        ax.set_xlabel("layer")
        ax.set_ylabel("change of the layer's share" if index % columns == 0 else "")
        ax.grid(alpha=0.3)
    figure.legend(handles=list(handles.values()), loc="outside lower center",
                  ncols=min(len(handles), 4), frameon=False)
    figure.suptitle(f"{mpl_text(model)}: compensation per layer after fine-tuning the pruned "
                    "model")
    return figure


def order_finetune_findings(tables: dict) -> list[str]:
    sentences = []
    summary = _finetune_summary(_rows(tables, "order_finetune"))
    for (model, task, ratio), keys in _group(
            [{"model": k[0], "task": k[1], "ratio": k[3], "key": k} for k in summary],
            "model", "task", "ratio").items():
        parts = []
        for row in sorted(keys, key=lambda r: _order_sort(str(r["key"][2]))):
            before, after = summary[row["key"]]["before"][0], summary[row["key"]]["after"][0]
            if before is not None and after is not None:
                parts.append(f"{row['key'][2]} {_fmt(before)} → {_fmt(after)}")
        if parts:
            sentences.append(f"{model} on {task}, {_pct(float(ratio))} of heads pruned, "
                             f"relative performance before → after fine-tuning again: "
                             f"{'; '.join(parts)}.")
    comp = _rows(tables, "compensation")
    for (model, task), members in _group(comp, "model", "task").items():
        share = _stats(r.get("top10_share") for r in members)
        gini = _stats(r.get("gini") for r in members)
        if share[0] is None:
            continue
        sentences.append(
            f"Compensation ({model} on {task}, {len(members)} pruned models): after "
            f"fine-tuning, the top 10% of the remaining heads carry {_pct(share[0])} of the "
            f"gain in share of importance, Gini {_fmt(gini[0])} (10% and 0 if every head "
            f"gained alike).")
    return sentences


# --------------------------------------------------------------------------------------
# Estimators against exact ablation


def estimators_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "estimator_agreement")
    curves = order_curve_table(tables)
    has_curves = any(k[3] == "estimator" for k in curves)
    if not rows and not has_curves:
        return None
    section = Section("estimators", "Importance estimators against exact ablation", [
        "Exact ablation is the ground truth of a head's importance: the mean loss increase "
        "when that head alone is switched off (layers × heads evaluations). Each cheaper "
        "estimator (gradient = Michel et al.'s |∂L/∂ξ|; attention entropy, as focus = ln K − H; "
        "confidence = mean maximum attention weight, Voita et al.; weight magnitude of the "
        "head's projections) is computed on the same examples and compared with it by "
        "Spearman's ρ over all heads (raw scores). Time: wall seconds of each estimate, "
        "including loading the model."])
    if rows:
        table = Table(["model", "task", "estimator", "seeds", "Spearman ρ vs ablation",
                       "Pearson r", "seconds", "ablation seconds"], [],
                      "Mean ± std over seeds; task mlm = the masked LM (pre-train task).")
        for key, members in sorted(_group(rows, "model", "task", "estimator").items(),
                                   key=lambda item: (str(item[0][0]), str(item[0][1]),
                                                     _order_sort(str(item[0][2])))):
            rho = _stats(r.get("spearman_rho") for r in members)
            table.rows.append([_text(key[0]), _text(key[1]), _text(key[2]), str(rho[2]),
                               _fmt_ms(*rho),
                               _fmt_ms(*_stats(r.get("pearson_r") for r in members)),
                               _fmt_sig(_stats(r.get("seconds") for r in members)[0], 2),
                               _fmt_sig(_stats(r.get("reference_seconds") for r in members)[0],
                                        2)])
        section.tables.append(table)
    if has_curves:
        for model in _unique(k[0] for k in curves if k[3] == "estimator"):
            stem = figures.save(f"estimator-curves-{model}",
                                lambda m=model: figure_orders(curves, m, "estimator"))
            section.blocks.append(Block(
                f"{model}: pruning by each estimator", stem,
                f"{model}: heads pruned least important first by each estimator's raw "
                "scores; importance (black) is the gradient estimator with the study's "
                "first normalisation.", [_orders_table(curves, model, "estimator")]))
    section.links = (_table_links(run_dir, "estimator_agreement")
                     + _table_links(run_dir, "estimator_scores"))
    return section


def estimators_findings(tables: dict) -> list[str]:
    sentences = []
    rows = _rows(tables, "estimator_agreement")
    for (model, task), members in _group(rows, "model", "task").items():
        by_estimator = {key[0]: _stats(r.get("spearman_rho") for r in group)[0]
                        for key, group in _group(members, "estimator").items()}
        ranked = sorted((e for e in by_estimator if by_estimator[e] is not None),
                        key=lambda e: -by_estimator[e])
        if not ranked:
            continue
        what = "the masked LM" if task == "mlm" else task
        sentences.append(
            f"{model} on {what}: Spearman ρ with exact ablation: "
            + ", ".join(f"{e} {_fmt(by_estimator[e], 2)}" for e in ranked)
            + f"; {ranked[0]} ranks heads most like ablation.")
    return sentences


# --------------------------------------------------------------------------------------
# Weight-magnitude pruning


def _sparsity_summary(rows: list[dict]) -> dict[tuple, dict[float, dict]]:
    """(model, task, setting, metric) -> {sparsity: {value, relative, loss, achieved}}."""
    out: dict[tuple, dict[float, dict]] = {}
    rows = [row for row in rows if _is_main(row)]
    for key, members in _group(rows, "model", "task", "setting", "metric").items():
        points = {}
        for (level,), at in _group(members, "sparsity_requested").items():
            if _num(level) is None:
                continue
            points[float(level)] = {
                "value": _stats(r.get("value") for r in at),
                "relative": _stats(r.get("relative") for r in at),
                "loss": _stats(r.get("mean_loss") for r in at),
                "achieved": _stats(r.get("sparsity_achieved") for r in at)[0]}
        if points:
            out[key] = dict(sorted(points.items()))
    return out


def figure_sparsity(summary: dict, model):
    keys = [k for k in summary if k[0] == model]
    if not keys:
        return None
    mlm = [k for k in keys if k[1] == "mlm"]
    tasks = _unique(k[1] for k in keys if k[1] != "mlm")
    panels = (1 if mlm else 0) + len(tasks)
    figure = _new_figure(4.2 * min(3, panels) + 0.3, 3.6 * -(-panels // 3) + 0.9)
    axes, _ = _panel_grid(figure, panels, max_columns=3)
    index = 0
    if mlm:
        ax = axes[0]
        for key in mlm:
            points = summary[key]
            xs = list(points)
            ax.plot(xs, [points[x]["relative"][0] for x in xs], marker="o",
                    label=f"relative {mpl_text(key[3])}")
        losses = [summary[k] for k in mlm]
        twin = ax.twinx()
        points = losses[0]
        twin.plot(list(points), [points[x]["loss"][0] for x in points], color="tab:red",
                  marker="s", linestyle="--", label="masked-LM loss")
        twin.set_ylabel("masked-LM loss", color="tab:red")
        ax.set_title("pre-trained model, masked LM")
        ax.set_xlabel("sparsity of encoder weights")
        ax.set_ylabel("relative recall@1")
        ax.grid(alpha=0.3)
        lines = ax.get_legend_handles_labels()
        twin_lines = twin.get_legend_handles_labels()
        ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], loc="lower left",
                  fontsize=8)
        index = 1
    for offset, task in enumerate(tasks):
        ax = axes[index + offset]
        for colour, key in zip(TASK_COLOURS, [k for k in keys if k[1] == task], strict=False):
            points = summary[key]
            xs = list(points)
            means = [points[x]["relative"][0] for x in xs]
            ax.plot(xs, means, marker="o", color=colour, label=mpl_text(key[2]))
        ax.axhline(RETAIN, color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(mpl_text(task))
        ax.set_xlabel("sparsity of encoder weights")
        ax.set_ylabel("relative performance")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    figure.suptitle(f"{mpl_text(model)}: weight-magnitude pruning (mean over seeds)")
    return figure


def sparsity_section(tables: dict, run_dir: Path, figures: _Figures) -> Section | None:
    rows = _rows(tables, "sparsity")
    if not rows:
        return None
    summary = _sparsity_summary(rows)
    section = Section("sparsity", "Weight-magnitude pruning (Gordon et al.)", [
        "Unstructured magnitude pruning of the encoder's linear weights (the smallest |w| set "
        "to zero, globally or per matrix as configured). Pre-trained: the masked-LM loss and "
        "recall@1 of the pre-trained model at each sparsity. Pruned before fine-tuning: the "
        "pre-trained model pruned, then fine-tuned with the pruned weights held at zero. "
        "Pruned after fine-tuning: the fine-tuned model pruned, without further training. "
        "Relative to the unpruned model (sparsity 0)."])
    table = Table(["model", "task", "setting", "metric", "sparsity", "achieved", "value",
                   "relative", "loss"], [], "Mean ± std over seeds.")
    for key, points in summary.items():
        for level, point in points.items():
            table.rows.append([_text(key[0]), _text(key[1]), _text(key[2]), _text(key[3]),
                               _pct(level), _fmt(point["achieved"], 4),
                               _fmt_ms(*point["value"]), _fmt_ms(*point["relative"]),
                               _fmt_ms(*point["loss"])])
    for model in _unique(k[0] for k in summary):
        stem = figures.save(f"sparsity-{model}", lambda m=model: figure_sparsity(summary, m))
        section.blocks.append(Block(_text(model), stem,
                                    f"{model}: performance against weight sparsity."))
    section.tables.append(table)
    section.links = _table_links(run_dir, "sparsity")
    return section


def sparsity_findings(tables: dict) -> list[str]:
    sentences = []
    summary = _sparsity_summary(_rows(tables, "sparsity"))
    for key, points in summary.items():
        model, task, setting, metric = key
        relative = {level: p["relative"][0] for level, p in points.items()
                    if p["relative"][0] is not None}
        if len(relative) < 2:
            continue
        kept = None
        for level, value in relative.items():
            if value < RETAIN:
                break
            kept = level
        what = "masked LM" if task == "mlm" else task
        sentence = (f"{model}, {what} ({setting}): {metric} stays ≥ {_pct(RETAIN)} of the "
                    f"unpruned model up to {MISSING if kept is None else _pct(kept)} sparsity")
        top = max(relative)
        if len(relative) <= 4:  # few levels: name them all
            sentence += "; relative " + ", ".join(f"{_fmt(value)} at {_pct(level)}"
                                                  for level, value in relative.items())
        else:
            sentence += f"; at {_pct(top)} sparsity it keeps {_fmt(relative[top])} of it"
        loss = points[top]["loss"][0]
        base = points[min(points)]["loss"][0]
        if task == "mlm" and loss is not None and base is not None:
            sentence += f" (masked-LM loss {_fmt(base)} → {_fmt(loss)})"
        sentences.append(sentence + ".")
    return sentences


SECTIONS = (
    ("pruning orders", orders_section),
    ("fine-tuning after pruning", order_finetune_section),
    ("importance estimators", estimators_section),
    ("weight-magnitude pruning", sparsity_section),
)

FINDINGS = (
    (orders_findings, "Pruning orders (Budhraja et al.)"),
    (order_finetune_findings, "Fine-tuning after pruning and compensation"),
    (estimators_findings, "Importance estimators vs exact ablation"),
    (sparsity_findings, "Weight-magnitude pruning (Gordon et al.)"),
)
