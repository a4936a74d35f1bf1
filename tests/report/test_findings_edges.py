"""Headline findings at the edges, on hand-made tables: curves below the threshold from
their first ratio or never below it, one seed, a weak masked LM, a fine-tuning that had not
converged, seeds that disagree more than the curves do. Every sentence must read correctly
(nothing "up to 0%") and state an inconclusive result where it is made."""

from __future__ import annotations

from test_claims import (
    STRONG_MLM,
    WEAK_MLM,
    curve,
    drift_rows,
    freezing_tables,
    orders,
    recall_rows,
)

from headcount.report.assemble import headline_findings
from headcount.report.companion.estimators import estimators_findings
from headcount.report.companion.sparsity import sparsity_findings


def only(findings: list[str], start: str) -> str:
    matches = [f for f in findings if f.startswith(start)]
    assert len(matches) == 1, (start, findings)
    return matches[0]


def test_a_curve_below_the_threshold_from_its_first_ratio_kept_nothing():
    rows = curve((1.0, 0.97, 0.95, 0.92, 0.5)) + curve((1.0, 0.85, 0.8, 0.7, 0.5),
                                                       normalize="l2")
    sentence = only(headline_findings({"curves": rows}), "m, t: the mean relative")
    assert "up to 0%" not in sentence
    assert "up to 75% of heads pruned with l1 normalisation" in sentence
    assert ("at no ratio pruned with l2 normalisation (below 90% already at 25% pruned)"
            in sentence)
    assert "l1 prunes furthest (the paper also found l1 best)." in sentence


def test_a_curve_that_never_falls_below_and_one_seed():
    rows = curve((1.0, 0.99, 0.98, 0.97, 0.95), seeds=(0,))
    sentence = only(headline_findings({"curves": rows}), "m, t: the mean relative")
    assert "over 1 seed stays ≥ 90% at every ratio measured with l1 normalisation " \
           "(up to 100% of heads pruned)" in sentence
    # keeping 0.95 with every head pruned, the model answers alike for every input
    assert sentence.endswith("— inconclusive here: the fine-tuned model scores hardly better "
                             "on t than one answer for every input (seed 0 keeps 0.95 of its "
                             "score with every head pruned).")


def test_seeds_that_disagree_more_than_the_normalisations_make_the_comparison_inconclusive():
    rows = curve((1.0, 0.97, 0.95, 0.92, 0.5), spread=0.1) + curve(
        (1.0, 0.96, 0.95, 0.92, 0.5), normalize="l2", spread=0.1)
    sentence = only(headline_findings({"curves": rows}), "m, t: the mean relative")
    assert "— inconclusive here: seeds differ by" in sentence


def test_the_all_tasks_sentence_is_left_out_when_a_task_kept_nothing():
    rows = curve((1.0, 0.97, 0.95, 0.92, 0.5)) + curve((1.0, 0.8, 0.7, 0.6, 0.5), task="u")
    findings = headline_findings({"curves": rows})
    assert not [f for f in findings if "all 2 tasks" in f]
    assert all("up to 0%" not in f for f in findings)


def test_the_all_tasks_sentence_leaves_out_a_task_the_model_has_not_learned():
    learned = curve((1.0, 0.97, 0.95, 0.92, 0.5)) + curve((1.0, 0.97, 0.93, 0.6, 0.5),
                                                            task="u")
    findings = headline_findings({"curves": learned})
    assert only(findings, "m, all 2 tasks").endswith("(the limit is set by u).")
    unlearned = curve((1.0, 1.0, 1.0, 0.99, 0.99), task="v")
    findings = headline_findings({"curves": learned + unlearned})
    assert only(findings, "m, all 2 tasks")  # v, not learned, is left out of the count
    assert not [f for f in findings if "all 3 tasks" in f]


def test_masked_lm_findings_of_a_weak_masked_lm_are_inconclusive_where_stated():
    findings = headline_findings({"curves": WEAK_MLM, "recall": recall_rows(0.0)})
    mlm = only(findings, "m, masked LM, l1")
    assert "stays ≥ 75% at every ratio measured (up to 100% of heads pruned)" in mlm
    assert mlm.endswith("— inconclusive here: the masked LM is weak (recall@1 0.120 "
                        "unpruned, below 0.20).")
    recall = only(findings, "m: recall")
    assert "x = 0% for t (at any share)" in recall and "inconclusive here" in recall
    strong = only(headline_findings({"curves": STRONG_MLM}), "m, masked LM, l1")
    assert "inconclusive" not in strong
    assert "falls below 75% at 75% of heads pruned (≥ 75% up to 50% pruned: 50% of the " \
           "heads keep 75%" in strong


def test_a_masked_lm_below_its_guideline_from_the_first_ratio():
    rows = curve((1.0, 0.6, 0.5, 0.4, 0.1), task="mlm", kind="pretrain", value_scale=0.5)
    sentence = only(headline_findings({"curves": rows}), "m, masked LM, l1")
    assert "is below 75% already at 25% of heads pruned." in sentence
    assert "up to 0%" not in sentence


def test_freezing_that_had_not_converged_is_inconclusive_where_stated():
    sentence = only(headline_findings(freezing_tables(0.62, falling=True)),
                    "m fine-tuned with 5 frozen layers")
    assert "reaches, relative to full fine-tuning, 0.62 on t (accuracy)" in sentence
    assert "— inconclusive here: full fine-tuning had not converged (seed 0" in sentence
    converged = only(headline_findings(freezing_tables(0.99, falling=False)), "m fine-tuned")
    assert "inconclusive" not in converged


def test_drift_findings_name_single_layers_and_ties():
    sentence = only(headline_findings({"drift_layers": drift_rows(
        [(0.01, 0.02), (0.05, 0.05), (0.2, 0.3)])}), "m, t: attention")
    assert "changes least in the lowest layers — mean JS divergence 0.015 over layer 0 vs " \
           "0.25 over layer 2" in sentence
    assert "hidden-state L2 distance 1 over layer 0 vs 3 over layer 2" in sentence
    tie = only(headline_findings({"drift_layers": drift_rows(
        [(0.1, 0.1), (0.2, 0.2), (0.1, 0.1)])}), "m, t: attention")
    assert "changes as much in the lowest as in the highest layers" in tie


def test_order_contrasts_state_agreement_and_inconclusive_results():
    tables = {"curves": curve((1.0, 0.97, 0.95, 0.92, 0.5)),
              "order_curves": orders(**{"avoid-middle": ((1.0, 0.6, 0.5, 0.4, 0.4), 0.01),
                                        "middle": ((1.0, 0.95, 0.9, 0.8, 0.4), 0.01),
                                        "non-adjacent": ((1.0, 0.95, 0.9, 0.8, 0.4), 0.1),
                                        "consecutive": ((1.0, 0.93, 0.9, 0.8, 0.4), 0.1)})}
    sentence = only(headline_findings(tables), "m on t: mean relative performance")
    assert "avoid-middle ≤ middle (unlike their BERT)" in sentence
    assert "non-adjacent > consecutive (as they found), inconclusive here: seeds differ" \
        in sentence


def test_orders_on_a_task_the_model_has_not_learned_are_inconclusive_where_stated():
    flat = (1.0, 1.0, 0.99, 0.99, 0.99)
    tables = {"curves": curve(flat),
              "order_curves": orders(importance=(flat, 0.0), middle=(flat, 0.0),
                                     **{"avoid-middle": (flat, 0.0)})}
    sentence = only(headline_findings(tables), "m on t: mean relative performance")
    assert "Budhraja et al.'s contrasts" not in sentence
    assert sentence.endswith("— inconclusive here: the fine-tuned model scores hardly better "
                             "on t than one answer for every input (seed 0 keeps 0.99 of its "
                             "score with every head pruned).")


def test_estimators_that_all_disagree_with_ablation_are_not_called_a_match():
    rows = [{"model": "m", "task": task, "seed": 0, "estimator": estimator,
             "spearman_rho": rho}
            for task in ("t", "mlm") for estimator, rho in (("gradient", -0.1),
                                                           ("magnitude", -0.3))]
    sentences = estimators_findings({"estimator_agreement": rows, "curves": WEAK_MLM})
    assert sentences[0].endswith("no estimator ranks heads like ablation (the best, "
                                 "gradient, has ρ = -0.10).")
    assert "the masked LM" in sentences[1] and "inconclusive here: the masked LM is weak" \
        in sentences[1]


def test_sparsity_that_never_falls_below_the_threshold():
    rows = [{"model": "m", "task": "t", "seed": 0, "setting": "pruned after fine-tuning",
             "metric": "accuracy", "main": True, "sparsity_requested": level,
             "relative": relative, "value": relative}
            for level, relative in ((0.0, 1.0), (0.4, 0.99), (0.8, 0.95))]
    sentence = sparsity_findings({"sparsity": rows})[0]
    assert "stays ≥ 90% of the unpruned model at every level measured (up to 80% " \
           "sparsity)" in sentence
