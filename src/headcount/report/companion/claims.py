"""The companion papers' claims against this run (rows of the report's opening table, see
`headcount.report.claims`): Budhraja et al. on random and layer-location pruning orders and
compensation, Gordon et al. on weight-magnitude pruning.

Example:
    >>> COMPANION_CLAIMS[0].judge({})[1].text
    'inconclusive here: not measured in this run'
"""

from __future__ import annotations

from headcount.report.aggregate import retained, seed_areas, seed_reaches
from headcount.report.companion.orders import order_curve_table
from headcount.report.format import (
    EVEN_TOP10,
    HARMLESS,
    HARMLESS_LEVELS,
    PAPER_PRUNED,
    RETAIN,
    as_number,
    fmt,
    group_rows,
    is_main,
    mean_of,
    mean_std_count,
    pct,
    reach_text,
    table_rows,
    unique,
)
from headcount.report.verdicts import (
    DISAGREES,
    INCONCLUSIVE,
    Claim,
    Verdict,
    combined,
    comparison_problem,
    judged,
    run_setting,
    split_problem,
    straddle_problem,
    task_problem,
    where,
)

BUDHRAJA = "Budhraja et al."
GORDON = "Gordon et al."
BUDHRAJA_SETTING = "BERT, several tasks"
GORDON_SETTING = "BERT pruned in pre-training, fine-tuned on GLUE"


def _order_rows(tables: dict, model, task, order: str) -> list[dict]:
    """The main rows of one pruning order's curves (seeds and draws)."""
    return [r for r in table_rows(tables, "order_curves") if is_main(r)
            and r.get("family") == "order" and (r.get("model"), r.get("task"),
                                                  r.get("order")) == (model, task, order)]


def _order_tasks(tables: dict, order: str) -> list[tuple]:
    return unique((k.model, k.task) for k in order_curve_table(tables)
                  if k.family == "order" and k.order == order)


def _learned(tables: dict, model, task) -> str | None:
    """The "not learned" rule for a downstream task (`untrained_problem`)."""
    return task_problem(table_rows(tables, "curves"), model, task)


def _setting(tables: dict, models) -> str:
    return "; ".join(run_setting(tables, model).text for model in unique(models))


def _random(tables: dict) -> tuple[str, Verdict]:
    curves = order_curve_table(tables)
    parts, verdicts, models = [], [], []
    for model, task in _order_tasks(tables, "random"):
        points = next(p for k, p in curves.items() if (k.model, k.task, k.order) == (
            model, task, "random"))
        kept = retained(((p[3] if p[3] is not None else r, p[0]) for r, p in points.items()),
                        RETAIN)[0]
        half = min(points, key=lambda r: (abs(r - PAPER_PRUNED), -r))
        draws = seed_reaches(_order_rows(tables, model, task, "random"), RETAIN)
        parts.append(f"{where(tables, model, task)}: {fmt(points[half][0], 2)} at "
                     f"{pct(half)} pruned, {reach_text(kept, RETAIN)} ({len(draws)} curves)")
        models.append(model)
        verdicts.append(judged((kept or 0) >= PAPER_PRUNED - 1e-9, _learned(
            tables, model, task) or split_problem(
            ((r or 0) >= PAPER_PRUNED - 1e-9 for r in draws), "seeds and draws")))
    return _with_setting(parts, tables, models), combined(verdicts)


def _contrast(tables: dict, first: str, second: str, *,
              same: bool = False) -> tuple[str, Verdict]:
    """`first` prunes better than `second` (or, `same`: neither prunes better)."""
    parts, verdicts, models = [], [], []
    for model, task in _order_tasks(tables, first):
        a = seed_areas(_order_rows(tables, model, task, first))
        b = seed_areas(_order_rows(tables, model, task, second))
        if not a or not b:
            continue
        models.append(model)
        parts.append(f"{where(tables, model, task)}: {first} {fmt(mean_of(a))}, "
                     f"{second} {fmt(mean_of(b))}")
        problem, unlearned = comparison_problem(a, b), _learned(tables, model, task)
        if unlearned:
            verdicts.append(Verdict(INCONCLUSIVE, unlearned))
        elif same:
            one_seed = min(len(a), len(b)) < 2
            verdicts.append(Verdict(INCONCLUSIVE, problem) if one_seed else
                            judged(problem is not None))
        else:
            verdicts.append(judged(mean_of(a) > mean_of(b), problem))
    text = _with_setting(parts, tables, models)
    return ("mean relative over all ratios, " + text if parts else text), combined(verdicts)


def _compensation(tables: dict) -> tuple[str, Verdict]:
    rows = table_rows(tables, "compensation")
    parts, verdicts = [], []
    for (model, task), members in group_rows(rows, "model", "task").items():
        share = mean_of(r.get("top10_share") for r in members)
        if share is None:
            continue
        gini = mean_of(r.get("gini") for r in members)
        parts.append(f"{where(tables, model, task)}: the top 10% of the remaining heads "
                     f"carry {pct(share)} of the gain (Gini {fmt(gini, 2)}; "
                     f"{len(members)} pruned models)")
        verdicts.append(judged(share <= EVEN_TOP10, _learned(tables, model, task)
                               or straddle_problem((r.get("top10_share") for r in members),
                                                   EVEN_TOP10, what="pruned models")))
    return _with_setting(parts, tables, models_of(rows)), combined(verdicts)


def models_of(rows: list[dict]) -> list:
    return unique(r.get("model") for r in rows)


def _sparsity_points(tables: dict) -> dict[tuple, dict[float, list[float]]]:
    """(model, task, setting) -> {level: relative per seed} of the main sparsity rows."""
    points: dict[tuple, dict[float, list[float]]] = {}
    for row in table_rows(tables, "sparsity"):
        level, relative = as_number(row.get("sparsity_requested")), as_number(
            row.get("relative"))
        if is_main(row) and level is not None and relative is not None:
            key = (row.get("model"), row.get("task"), row.get("setting"))
            points.setdefault(key, {}).setdefault(round(level, 9), []).append(relative)
    return points


def _harmless(tables: dict) -> tuple[str, Verdict]:
    parts, verdicts = [], []
    curves = table_rows(tables, "curves")
    for (model, task, setting), levels in _sparsity_points(tables).items():
        low = {level: values for level, values in levels.items()
               if any(abs(level - h) < 1e-9 for h in HARMLESS_LEVELS)}
        if not low:
            continue
        what = where(tables, model, "masked LM" if task == "mlm" else task)
        parts.append(f"{what} ({setting}): " + ", ".join(
            f"{fmt(mean_of(v), 2)} at {pct(level)}" for level, v in low.items()))
        problem = task_problem(curves, model, task)
        for values in low.values():
            verdicts.append(judged(mean_of(values) >= HARMLESS, problem or straddle_problem(
                values, HARMLESS)))
    if not verdicts and _sparsity_points(tables):
        return "no sparsity of 30–40% measured", Verdict(INCONCLUSIVE, "no sparsity of "
                                                         "30–40% measured")
    return _with_setting(parts, tables, [k[0] for k in _sparsity_points(tables)]), \
        combined(verdicts)


def _after_not_better(tables: dict) -> tuple[str, Verdict]:
    points = _sparsity_points(tables)
    parts, verdicts = [], []
    for (model, task, setting), before in points.items():
        if setting != "pruned before fine-tuning":
            continue
        after = points.get((model, task, "pruned after fine-tuning"), {})
        common = [level for level in before if level in after and level > 0]
        for level in common:
            b, a = before[level], after[level]
            parts.append(f"{where(tables, model, task)} at {pct(level)}: before "
                         f"{fmt(mean_of(b), 2)}, after {fmt(mean_of(a), 2)}")
            problem = _learned(tables, model, task)
            if problem:
                verdicts.append(Verdict(INCONCLUSIVE, problem))
                continue
            if min(len(a), len(b)) < 2:
                verdicts.append(Verdict(INCONCLUSIVE, "one seed: no spread to compare the "
                                        "difference with"))
                continue
            spread = max(mean_std_count(a)[1], mean_std_count(b)[1])
            better = mean_of(a) - mean_of(b) > spread
            verdicts.append(Verdict(DISAGREES) if better else judged(True))
    text = _with_setting(parts, tables, [k[0] for k in points])
    return (text + "; after = pruned once fine-tuned, not trained again" if parts
            else text), combined(verdicts)


def _with_setting(parts: list[str], tables: dict, models) -> str:
    if not parts:
        return "not measured"
    return "; ".join(parts) + f" ({_setting(tables, models)})"


COMPANION_CLAIMS = (
    Claim(BUDHRAJA, "A large fraction of the heads can be pruned at random with limited "
          "effect", f"limited effect on accuracy (Transformer and {BUDHRAJA_SETTING})", _random,
          f"random order (mean over seeds and draws) must stay ≥ {pct(RETAIN)} up to at "
          f"least {pct(PAPER_PRUNED)} of heads pruned."),
    Claim(BUDHRAJA, "Pruning the top or the bottom layers first makes no difference",
          f"no preference for top or bottom ({BUDHRAJA_SETTING})",
          lambda tables: _contrast(tables, "top", "bottom", same=True),
          "agrees when the two curves cannot be told apart (rule: comparing two curves), "
          "disagrees when they can."),
    Claim(BUDHRAJA, "Avoiding the middle layers beats pruning them first",
          f"avoid-middle better than middle ({BUDHRAJA_SETTING})",
          lambda tables: _contrast(tables, "avoid-middle", "middle"),
          "avoid-middle's curve must be better than middle's (rule: comparing two curves)."),
    Claim(BUDHRAJA, "Pruning non-adjacent layers beats pruning consecutive ones",
          f"non-adjacent better than consecutive ({BUDHRAJA_SETTING})",
          lambda tables: _contrast(tables, "non-adjacent", "consecutive"),
          "non-adjacent's curve must be better than consecutive's (rule: comparing two "
          "curves)."),
    Claim(BUDHRAJA, "Fine-tuned after pruning, the remaining heads compensate about equally",
          f"roughly equally distributed ({BUDHRAJA_SETTING})", _compensation,
          f"the top 10% of the remaining heads may carry at most {pct(EVEN_TOP10)} of the "
          "gain in share of importance (10% when every head gains alike), mean over the "
          "pruned models."),
    Claim(GORDON, "Pruning 30–40% of the weights costs nothing",
          f"30–40%: pre-training loss and transfer unaffected ({GORDON_SETTING})",
          _harmless, f"every setting measured at 30% or 40% sparsity must keep ≥ "
          f"{pct(HARMLESS)} of the unpruned performance."),
    Claim(GORDON, "Pruning after fine-tuning is no better than pruning before it",
          f"fine-tuning does not improve prunability ({GORDON_SETTING})", _after_not_better,
          "at each sparsity measured in both settings, pruning after fine-tuning must not "
          "beat pruning before it (then fine-tuning with the zeros held) by more than the "
          "larger standard deviation over seeds; one seed is inconclusive."),
)
