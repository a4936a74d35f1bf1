"""The report's opening table, "The paper's claims, and this run": one row per claim of the
reference study (Chiang & Chen) and of its two companion papers (`companion/claims`), each
with the paper's number and setting beside this run's and a verdict (agrees, disagrees, or
inconclusive here with the reason), and the method notes that say how each verdict is
reached (`method_notes_section`).

Every number of this run is computed from its tables; a claim whose table is missing is
inconclusive here ("not measured in this run").

Example:
    >>> [row.verdict.verdict for row in claim_rows({})][:2]
    ['inconclusive', 'inconclusive']
"""

from __future__ import annotations

from dataclasses import dataclass

from headcount.drift_plots import drift_layer_means
from headcount.report.aggregate import (
    curve_groups,
    curve_kind,
    drift_contrast,
    recall_reached,
    seed_areas,
    seed_reaches,
)
from headcount.report.companion.claims import COMPANION_CLAIMS
from headcount.report.format import (
    MLM_RETAIN,
    PAPER_FROZEN,
    PAPER_FROZEN_OTHER,
    PAPER_MAX_ABS_R,
    PAPER_PRUNED,
    RECALL_TARGET,
    RETAIN,
    as_number,
    as_text,
    fmt,
    fmt_sig,
    group_rows,
    mean_of,
    models_in,
    pct,
    pick_normalization,
    reach_text,
    rows_of_model,
    table_rows,
    unique,
)
from headcount.report.render import Section, Table
from headcount.report.verdicts import (
    INCONCLUSIVE,
    RULES,
    Claim,
    Verdict,
    combined,
    comparison_problem,
    convergence_problem,
    judged,
    layer_span,
    masked_lm_problem,
    run_setting,
    split_problem,
    straddle_problem,
    task_problem,
    where,
)

RECALL_SLACK = 0.05  # "around 75%": recall reaches 90% by x = 80%
C_AND_C = "Chiang & Chen"
PAPER_SETTING = "RoBERTa-large; CoLA/SST-2/QQP/MNLI"


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    run: str
    verdict: Verdict


def _downstream(tables: dict) -> tuple[list[dict], list]:
    """The downstream curve rows and their groups (mean over seeds)."""
    rows = [r for r in table_rows(tables, "curves") if curve_kind(r) == "downstream"]
    return rows, [g for g in curve_groups(rows) if g.curve == "downstream"]


def _chosen_groups(groups: list) -> list:
    """The curves of the study's first normalisation (l1 when run), one per model and task."""
    chosen = pick_normalization(g.normalize for g in groups)
    return [g for g in groups if g.normalize == chosen]


def _pruned_half(tables: dict) -> tuple[str, Verdict]:
    rows, groups = _downstream(tables)
    parts, verdicts = [], []
    for group in _chosen_groups(groups):
        kept = group.retained(RETAIN)[0]
        reaches = seed_reaches(group.members(rows), RETAIN)
        parts.append(f"{where(tables, group.model, group.task)}: {reach_text(kept, RETAIN)}")
        verdicts.append(judged(kept is not None and kept > PAPER_PRUNED, task_problem(
            rows, group.model, group.task) or split_problem(
            (r or 0) > PAPER_PRUNED for r in reaches)))
    return _joined(parts, tables, groups, "normalize"), combined(verdicts)


def _l1_best(tables: dict) -> tuple[str, Verdict]:
    rows, groups = _downstream(tables)
    parts, verdicts = [], []
    for (model, task), members in group_rows(
            [{"model": g.model, "task": g.task, "g": g} for g in groups], "model",
            "task").items():
        by_norm = {m["g"].normalize: seed_areas(m["g"].members(rows)) for m in members}
        parts.append(f"{where(tables, model, task)}: " + ", ".join(
            f"{as_text(n)} {fmt(mean_of(a))}" for n, a in by_norm.items()))
        if "l1" not in by_norm or len(by_norm) < 2:
            verdicts.append(Verdict(INCONCLUSIVE, "l1 and another normalisation not both "
                                    "run"))
            continue
        l1 = mean_of(by_norm["l1"])
        for other, areas in by_norm.items():
            if other != "l1":
                verdicts.append(judged(l1 >= mean_of(areas),
                                       task_problem(rows, model, task)
                                       or comparison_problem(by_norm["l1"], areas)))
    text = "mean relative over all ratios, " + "; ".join(parts) if parts else ""
    return _joined([text] if text else [], tables, groups, None), combined(verdicts)


def _more_heads(tables: dict) -> tuple[str, Verdict]:
    _, groups = _downstream(tables)
    chosen = _chosen_groups(groups)
    models = unique(g.model for g in chosen)
    if not models:
        return "not measured", combined([])
    if len(models) < 2:
        return f"one model ({as_text(models[0])})", Verdict(INCONCLUSIVE,
                                                           "one model in this run")
    reach = {}
    for model in models:
        kept = [g.retained(RETAIN)[0] or 0.0 for g in chosen if g.model == model]
        reach[model] = (run_setting(tables, model).heads or 0, min(kept))
    parts = [f"{model} ({heads} heads): {reach_text(kept, RETAIN)}"
             for model, (heads, kept) in reach.items()]
    most = max(reach.values(), key=lambda v: v[0])
    fewest = min(reach.values(), key=lambda v: v[0])
    return "; ".join(parts), judged(most[1] > fewest[1])


def _mlm_half(tables: dict) -> tuple[str, Verdict]:
    curves = table_rows(tables, "curves")
    groups = [g for g in curve_groups([r for r in curves if curve_kind(r) == "pretrain"])
              if g.curve == "pretrain"]
    parts, verdicts = [], []
    for group in _chosen_groups(groups):
        kept = group.retained(MLM_RETAIN)[0]
        parts.append(f"{where(tables, group.model, 'masked LM')}: "
                     f"{reach_text(kept, MLM_RETAIN)}")
        verdicts.append(judged(kept is not None and kept > PAPER_PRUNED,
                               masked_lm_problem(curves, group.model)))
    return _joined(parts, tables, groups, "normalize"), combined(verdicts)


def _recall(tables: dict) -> tuple[str, Verdict]:
    rows = table_rows(tables, "recall")
    parts, verdicts = [], []
    for model in models_in(rows):
        of_model = rows_of_model(rows, model)
        normalize = pick_normalization(r.get("normalize") for r in of_model)
        for (task,), members in group_rows([r for r in of_model
                                            if r.get("normalize") == normalize],
                                           "task").items():
            x = recall_reached(members)
            parts.append(f"{where(tables, model, task)}: " + (
                "never reaches 90%" if x is None else f"≥ {pct(RECALL_TARGET)} from x = "
                                                      f"{pct(x)}"))
            curves = table_rows(tables, "curves")
            verdicts.append(judged(x is not None and x <= MLM_RETAIN + RECALL_SLACK + 1e-9,
                                   masked_lm_problem(curves, model)
                                   or task_problem(curves, model, task)))
    return _joined(parts, tables, [], None), combined(verdicts)


def _drift(tables: dict) -> tuple[str, Verdict]:
    rows = table_rows(tables, "drift_layers")
    parts, verdicts = [], []
    for (model, task), members in group_rows(rows, "model", "task").items():
        contrast = drift_contrast(next(iter(drift_layer_means(members).values()), []))
        if contrast is None:
            continue
        lower = [contrast["js_low"] < contrast["js_high"]]
        text = (f"{where(tables, model, task)}: JS {fmt_sig(contrast['js_low'])} "
                f"({layer_span(contrast['low_layers'])}) vs {fmt_sig(contrast['js_high'])} "
                f"({layer_span(contrast['high_layers'])})")
        if contrast["l2_low"] is not None and contrast["l2_high"] is not None:
            lower.append(contrast["l2_low"] < contrast["l2_high"])
            text += f"; L2 {fmt_sig(contrast['l2_low'])} vs {fmt_sig(contrast['l2_high'])}"
        per_seed = []
        for seed_rows in group_rows(members, "seed").values():
            seed = drift_contrast(next(iter(drift_layer_means(seed_rows).values()), []))
            if seed is not None:
                per_seed.append(seed["js_low"] < seed["js_high"])
        parts.append(text)
        verdicts.append(judged(all(lower), task_problem(table_rows(tables, "curves"), model,
                                                        task) or split_problem(per_seed)))
    return _joined(parts, tables, [], None), combined(verdicts)


def _freezing(tables: dict) -> tuple[str, Verdict]:
    rows = table_rows(tables, "freezing")
    parts, verdicts = [], []
    for (model, task, frozen), members in group_rows(rows, "model", "task",
                                                     "freeze_layers").items():
        relative = mean_of(r.get("relative") for r in members)
        if relative is None:
            continue
        threshold = next((v for k, v in PAPER_FROZEN.items() if k in str(task).lower()),
                         PAPER_FROZEN_OTHER)
        layers = run_setting(tables, model).layers
        parts.append(f"{where(tables, model, task)}: {fmt(relative, 2)} with {as_text(frozen)}"
                     + (f" of {layers}" if layers else "") + " layers frozen")
        problem = (task_problem(table_rows(tables, "curves"), model, task)
                   or convergence_problem(table_rows(tables, "finetune"), model, task, frozen)
                   or straddle_problem((r.get("relative") for r in members), threshold))
        verdicts.append(judged(relative >= threshold, problem))
    return _joined(parts, tables, [], None), combined(verdicts)


def _correlation(tables: dict) -> tuple[str, Verdict]:
    rows = table_rows(tables, "correlation")
    parts, verdicts = [], []
    for (model, task), members in group_rows(rows, "model", "task").items():
        normalize = pick_normalization(r.get("normalize") for r in members)
        for (kind,), of_kind in group_rows([r for r in members
                                            if r.get("normalize") == normalize],
                                           "importance").items():
            r = mean_of(row.get("pearson_r") for row in of_kind)
            if r is None:
                continue
            parts.append(f"{where(tables, model, task)}, {kind} importance: r = {fmt(r, 2)}")
            curves = table_rows(tables, "curves")
            problem = task_problem(curves, model, task) or (
                masked_lm_problem(curves, model) if kind == "pretrain" else None)
            problem = problem or straddle_problem(
                (abs(v) for v in (as_number(row.get("pearson_r")) for row in of_kind)
                 if v is not None), PAPER_MAX_ABS_R + 1e-12)
            verdicts.append(judged(abs(r) <= PAPER_MAX_ABS_R + 1e-12, problem))
    return _joined(parts, tables, [], None), combined(verdicts)


def _joined(parts: list[str], tables: dict, groups: list, detail: str | None) -> str:
    """This run's numbers, then its setting (model, heads, tasks' seeds)."""
    if not parts:
        return "not measured"
    models = unique(g.model for g in groups) or models_in(
        [r for name in ("curves", "recall", "drift_layers", "freezing", "correlation")
         for r in table_rows(tables, name)])
    settings = [run_setting(tables, model).text for model in models]
    extra = ""
    if detail == "normalize" and groups:
        extra = ", " + as_text(pick_normalization(g.normalize for g in groups))
    return "; ".join(parts) + f" ({'; '.join(settings)}{extra})"


REFERENCE_CLAIMS = (
    Claim(C_AND_C, "Pruned by importance, a model keeps ≥ 90% with more than half of its "
          "heads pruned",
          f"> 90% with > 50% of heads pruned, every task ({PAPER_SETTING})", _pruned_half,
          "the l1 curve (else the first normalisation): the largest ratio up to which the "
          "mean relative performance stays ≥ 90% must exceed 50%, for every task."),
    Claim(C_AND_C, "l1 normalisation of importance prunes better than l2 or none",
          f"l1 keeps more at the same ratio ({PAPER_SETTING}; also ALBERT)", _l1_best,
          "l1's curve must be better than every other normalisation's (rule: comparing two "
          "curves), for every task."),
    Claim(C_AND_C, "The model with more heads prunes further (RoBERTa-large, 384, vs "
          "ALBERT, 12)", "RoBERTa > 90% beyond 50% pruned; ALBERT drops sooner (4 tasks)",
          _more_heads, "needs two models: the one with the most heads must keep 90% "
          "further (on its weakest task) than the one with the fewest."),
    Claim(C_AND_C, "Fewer than half of the heads keep 75% of the masked-LM performance",
          "< 50% of heads keep 75% (RoBERTa-large; masked LM, Wikipedia)",
          _mlm_half, "the masked-LM curve must stay ≥ 75% beyond 50% of heads pruned."),
    Claim(C_AND_C, "~75% of the masked-LM performance is enough for ≥ 90% recall of the "
          "downstream-important heads",
          f"recall > 90% at x ≈ 75%, every task ({PAPER_SETTING})", _recall,
          f"the mean recall must reach 90% by x = {pct(MLM_RETAIN + RECALL_SLACK)}, for "
          "every task."),
    Claim(C_AND_C, "Fine-tuning changes the lower layers least (attention JS, hidden-state "
          "L2)", f"small in lower layers, larger above ({PAPER_SETTING})",
          _drift, "the lowest third of the layers must drift less than the highest third, "
          "in JS divergence and in L2 distance."),
    Claim(C_AND_C, "5 frozen lowest layers keep ≥ 0.91 (CoLA) / ≥ 0.98 (other tasks) of "
          "full fine-tuning", "0.91 CoLA, > 0.98 SST-2/QQP/MNLI (RoBERTa-large, 5 of 24 "
          "frozen)",
          _freezing, "the mean relative performance with the frozen layers must reach 0.91 "
          "(a CoLA task) or 0.98 (any other)."),
    Claim(C_AND_C, "Head importance hardly correlates with attention drift",
          f"|r| ≤ 0.10, pre-train and downstream importance ({PAPER_SETTING})",
          _correlation, "the mean Pearson r over seeds must be within ±0.10, for each task "
          "and kind of importance."),
)
CLAIMS = (*REFERENCE_CLAIMS, *COMPANION_CLAIMS)


def claim_rows(tables: dict, claims=CLAIMS) -> list[ClaimRow]:
    """Every claim judged against `tables` (a claim that fails to be judged is
    inconclusive, with the error as its reason: one bad table must not cost the table)."""
    rows = []
    for claim in claims:
        try:
            run, verdict = claim.judge(tables)
        except Exception as error:  # a bad table must not cost the whole table
            run, verdict = "–", Verdict(INCONCLUSIVE, f"{type(error).__name__}: {error}")
        rows.append(ClaimRow(claim, run, verdict))
    return rows


def claims_section(tables: dict) -> Section | None:
    """The opening table; None when the run has no tables at all."""
    if not any(tables.values()):
        return None
    table = Table(["claim", "the paper: number (setting)", "this run: number (setting)",
                   "verdict"],
                  [[f"{row.claim.source}: {row.claim.claim}", row.claim.paper, row.run,
                    row.verdict.text] for row in claim_rows(tables)],
                  style="claims")
    return Section("claims", "The paper's claims, and this run", [
        "Inconclusive here: this run cannot support a verdict, for the reason given (the "
        "rules are in the method notes, at the end)."], tables=[table])


def method_notes_section(tables: dict) -> Section | None:
    if not any(tables.values()):
        return None
    return Section("method-notes", "Method notes", [
        "When a result is inconclusive here (marked where it is stated: in the claims, the "
        "headline findings and the sections):"],
        bullets=[f"{name}: {text}" for name, text in RULES] + [
            f"Claim “{claim.claim}”: {claim.reading}" for claim in CLAIMS])
