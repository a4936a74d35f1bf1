"""The rules that mark a result inconclusive, on hand-made tables whose answer is known."""

from __future__ import annotations

import pytest

from headcount.report.verdicts import (
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    RULES,
    Verdict,
    combined,
    comparison_problem,
    convergence_problem,
    masked_lm_problem,
    run_setting,
    split_problem,
    straddle_problem,
    task_problem,
    untrained_problem,
)

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


def mlm_rows(values, relatives, model="m", seeds=(0, 1), normalize="l1"):
    """Masked-LM curve rows: recall@1 `values[i]` and relative `relatives[i]` at RATIOS."""
    return [{"model": model, "task": "mlm", "curve": "pretrain", "normalize": normalize,
             "rank_task": "mlm", "schedule": "one-shot", "seed": seed, "metric": "recall@1",
             "main": True, "ratio_requested": ratio, "ratio_pruned": ratio, "value": value,
             "relative": relative}
            for seed in seeds
            for ratio, value, relative in zip(RATIOS, values, relatives, strict=True)]


def test_a_strong_masked_lm_that_falls_as_heads_go_can_be_read():
    rows = mlm_rows((0.5, 0.45, 0.35, 0.2, 0.05), (1.0, 0.9, 0.7, 0.4, 0.1))
    assert masked_lm_problem(rows, "m") is None
    assert masked_lm_problem(rows, "another model") is None  # nothing measured: no rule


def test_a_weak_masked_lm_is_inconclusive():
    rows = mlm_rows((0.12, 0.12, 0.12, 0.12, 0.12), (1.0, 1.0, 1.0, 1.0, 1.0))
    assert masked_lm_problem(rows, "m") == ("the masked LM is weak (recall@1 0.120 unpruned, "
                                            "below 0.20)")


def test_a_masked_lm_that_improves_as_heads_go_is_inconclusive():
    rows = mlm_rows((0.5, 0.55, 0.4, 0.2, 0.05), (1.0, 1.10, 0.8, 0.4, 0.1))
    assert masked_lm_problem(rows, "m") == "its relative recall@1 rises to 1.10 as heads go"
    # a rise within the tolerance (noise) is not a problem
    rows = mlm_rows((0.5, 0.51, 0.4, 0.2, 0.05), (1.0, 1.02, 0.8, 0.4, 0.1))
    assert masked_lm_problem(rows, "m") is None


def test_a_masked_lm_that_keeps_its_performance_without_heads_is_inconclusive():
    rows = mlm_rows((0.4, 0.4, 0.38, 0.35, 0.32), (1.0, 1.0, 0.95, 0.88, 0.8))
    assert masked_lm_problem(rows, "m") == ("it keeps 0.80 of its recall@1 with every head "
                                            "pruned")


def task_rows(relatives_by_seed, model="m", task="t"):
    """Downstream importance-curve rows: relative `relatives_by_seed[seed][i]` at RATIOS."""
    return [{"model": model, "task": task, "curve": "downstream", "normalize": "l1",
             "rank_task": task, "schedule": "one-shot", "seed": seed, "metric": "accuracy",
             "main": True, "ratio_requested": ratio, "ratio_pruned": ratio,
             "value": 0.8 * relative, "relative": relative}
            for seed, relatives in relatives_by_seed.items()
            for ratio, relative in zip(RATIOS, relatives, strict=True)]


def test_a_model_that_has_learned_its_task_can_be_read():
    rows = task_rows({0: (1.0, 0.98, 0.9, 0.7, 0.6), 1: (1.0, 0.97, 0.92, 0.75, 0.62)})
    assert untrained_problem(rows, "m", "t") is None
    assert task_problem(rows, "m", "t") is None
    assert untrained_problem(rows, "m", "other task") is None  # nothing measured: no rule


def test_a_model_that_scores_the_same_without_any_head_has_not_learned_its_task():
    # seed 1 answers the same for every input: with every head pruned it keeps its score
    rows = task_rows({0: (1.0, 0.98, 0.9, 0.7, 0.6), 1: (1.0, 1.0, 1.0, 0.99, 0.96)})
    problem = untrained_problem(rows, "m", "t")
    assert problem == ("the fine-tuned model scores hardly better on t than one answer for "
                       "every input (seed 1 keeps 0.96 of its score with every head pruned)")
    assert task_problem(rows, "m", "t") == problem
    # just below the rule's share: read as learned
    rows = task_rows({0: (1.0, 0.98, 0.9, 0.7, 0.6), 1: (1.0, 1.0, 1.0, 0.99, 0.94)})
    assert untrained_problem(rows, "m", "t") is None
    # only the main metric counts: a side metric that keeps its score changes nothing
    side = [{**row, "main": False, "metric": "f1", "relative": 1.0}
            for row in task_rows({0: RATIOS, 1: RATIOS})]
    learned = task_rows({0: (1.0, 0.98, 0.97, 0.95, 0.93), 1: (1.0, 0.97, 0.92, 0.75, 0.62)})
    assert untrained_problem(learned + side, "m", "t") is None
    # the masked LM is judged by its own rule
    weak = mlm_rows((0.1, 0.1, 0.1, 0.1, 0.1), (1.0, 1.0, 1.0, 1.0, 1.0))
    assert task_problem(weak, "m", "mlm") == masked_lm_problem(weak, "m")


def finetune_rows(full=(1.0, 0.95), frozen=(1.0, 0.97), seeds=(0, 1), frozen_layers=5):
    """Main fine-tuning rows whose last two quarters of training loss are given."""
    rows = []
    for seed in seeds:
        rows.append({"model": "m", "task": "t", "seed": seed, "kind": "full",
                     "freeze_layers": 0, "metric": "accuracy", "main": True,
                     "loss_previous_quarter": full[0], "loss_last_quarter": full[1]})
        rows.append({**rows[-1], "kind": "frozen", "freeze_layers": frozen_layers,
                     "loss_previous_quarter": frozen[0], "loss_last_quarter": frozen[1]})
        rows.append({**rows[-1], "metric": "loss", "main": False,
                     "loss_previous_quarter": 9.0, "loss_last_quarter": 1.0})
    return rows


def test_converged_fine_tunings_support_a_freezing_result():
    assert convergence_problem(finetune_rows(), "m", "t", 5) is None


def test_a_fine_tuning_whose_loss_still_falls_makes_freezing_inconclusive():
    problem = convergence_problem(finetune_rows(full=(0.77, 0.60)), "m", "t", 5)
    assert problem == ("full fine-tuning had not converged (seed 0: training loss 0.77 → "
                       "0.60 over its last quarter of steps)")
    problem = convergence_problem(finetune_rows(frozen=(1.2, 1.0)), "m", "t", 5)
    assert problem.startswith("fine-tuning with 5 frozen layers had not converged")


def test_a_freezing_result_without_its_records_is_inconclusive():
    assert convergence_problem(finetune_rows(), "m", "t", 3) == (
        "no record of fine-tuning with 3 frozen layers")
    rows = finetune_rows(full=(None, None))
    assert "no training loss recorded for full fine-tuning" in convergence_problem(
        rows, "m", "t", 5)


def test_comparisons_need_a_difference_larger_than_the_seeds_spread():
    assert comparison_problem([0.80, 0.82], [0.70, 0.71]) is None
    assert comparison_problem([0.80, 0.90], [0.84, 0.85]) == (
        "seeds differ by 0.050 (std), more than the difference 0.005")
    assert comparison_problem([0.8], [0.7]) == ("one seed: no spread to compare the "
                                                 "difference with")
    assert comparison_problem([], [0.7, 0.8]) == "not measured"


def test_results_whose_seeds_straddle_the_threshold_are_inconclusive():
    assert straddle_problem([0.95, 0.97], 0.9) is None
    assert straddle_problem([0.85, 0.95], 0.9) == "the seeds fall on both sides of 0.90"
    assert straddle_problem([0.85, None, "x"], 0.9) is None
    assert split_problem([True, True]) is None and split_problem([]) is None
    assert split_problem([True, False], "draws") == "the draws disagree"


@pytest.mark.parametrize(("verdicts", "expected"), [
    ([], (INCONCLUSIVE, "not measured in this run")),
    ([Verdict(AGREES), Verdict(AGREES)], (AGREES, "")),
    ([Verdict(AGREES), Verdict(INCONCLUSIVE, "a")], (INCONCLUSIVE, "a")),
    ([Verdict(DISAGREES, "b"), Verdict(INCONCLUSIVE, "a")], (DISAGREES, "b")),
    ([Verdict(INCONCLUSIVE, "a"), Verdict(INCONCLUSIVE, "a")], (INCONCLUSIVE, "a")),
])
def test_combined_verdicts(verdicts, expected):
    result = combined(verdicts)
    assert (result.verdict, result.reason) == expected


def test_verdict_texts_and_rules():
    assert Verdict(INCONCLUSIVE, "one model").text == "inconclusive here: one model"
    assert Verdict(AGREES).text == "agrees"
    assert {name for name, _ in RULES} == {"Masked LM", "Not learned", "Freezing",
                                           "Comparing two curves",
                                           "Thresholds"}
    assert "0.20" in dict(RULES)["Masked LM"] and "10%" in dict(RULES)["Freezing"]


def test_run_setting_counts_heads_and_seeds():
    importance = [{"model": "m", "seed": seed, "layer": layer, "head": head}
                  for seed in (0, 1, 2) for layer in range(2) for head in range(4)]
    setting = run_setting({"importance": importance}, "m")
    assert (setting.layers, setting.heads, setting.seeds) == (2, 8, 3)
    assert setting.text == "m, 8 heads, 3 seeds"
    assert run_setting({}, "m").text == "m, 0 seeds"
