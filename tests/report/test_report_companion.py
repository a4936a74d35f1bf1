"""Report sections of the companion studies, from hand-made tables with known answers."""

from __future__ import annotations

import warnings

import pytest

from headcount.report.assemble import headline_findings, write_report
from headcount.report.companion.orders import order_curve_table, orders_findings
from headcount.report.companion.sparsity import sparsity_findings

RATIOS = (0.0, 0.5, 1.0)


def _curve_row(**fields):
    return {"model": "m", "task": "t", "curve": "downstream", "metric": "accuracy",
            "main": True, **fields}


def make_tables():
    tables = {name: [] for name in ("curves", "order_curves", "order_finetune", "compensation",
                                    "compensation_layers", "estimator_agreement", "sparsity")}
    for seed in (0, 1):
        for ratio in RATIOS:
            relative = 1 - ratio / 2  # importance order
            for normalize, shift in (("l1", 0.0), ("l2", -0.1)):
                tables["curves"].append(_curve_row(
                    rank_task="t", normalize=normalize, schedule="one-shot", seed=seed,
                    ratio_requested=ratio, ratio_pruned=ratio, value=relative + shift,
                    relative=relative + shift))
            for draw, noise in enumerate((0.0, 0.1, 0.2)):  # random: 3 draws
                value = 1 - ratio * 0.8 + noise * ratio + 0.01 * seed
                tables["order_curves"].append(_curve_row(
                    order="random", family="order", draw=draw, seed=seed,
                    ratio_requested=ratio, ratio_pruned=ratio, value=value, relative=value))
            for order, slope in (("middle", 0.9), ("avoid-middle", 0.6)):
                tables["order_curves"].append(_curve_row(
                    order=order, family="order", draw=0, seed=seed, ratio_requested=ratio,
                    ratio_pruned=ratio, value=1 - slope * ratio, relative=1 - slope * ratio))
            tables["order_curves"].append(_curve_row(
                order="ablation", family="estimator", draw=0, seed=seed,
                ratio_requested=ratio, ratio_pruned=ratio, value=1 - ratio / 4,
                relative=1 - ratio / 4))
        for order in ("importance", "random"):
            for stage, relative in (("before", 0.6 + 0.1 * seed), ("after", 0.95)):
                tables["order_finetune"].append({
                    "model": "m", "task": "t", "seed": seed, "order": order, "ratio": 0.5,
                    "stage": stage, "metric": "accuracy", "value": relative,
                    "relative": relative})
            tables["compensation"].append({
                "model": "m", "task": "t", "seed": seed, "order": order, "ratio": 0.5,
                "heads_remaining": 6, "top10_share": 0.15 + 0.1 * seed, "gini": 0.3})
            for layer in range(2):
                tables["compensation_layers"].append({
                    "model": "m", "task": "t", "seed": seed, "order": order, "ratio": 0.5,
                    "layer": layer, "share_change": 0.01 * layer})
        for estimator, rho in (("gradient", 0.8), ("magnitude", 0.2 + 0.2 * seed)):
            tables["estimator_agreement"].append({
                "model": "m", "task": "t", "seed": seed, "estimator": estimator,
                "reference": "ablation", "spearman_rho": rho, "pearson_r": rho,
                "seconds": 1.0, "reference_seconds": 10.0})
        for level in (0.0, 0.3, 0.6, 0.9):
            tables["sparsity"].append({
                "model": "m", "task": "mlm", "seed": seed, "setting": "pre-trained",
                "sparsity_requested": level, "sparsity_achieved": level,
                "metric": "recall@1", "value": 0.5 * (1 - level / 2),
                "relative": 1 - level / 2, "mean_loss": 2 + level})
    return tables


def test_order_curves_average_over_seeds_and_draws_and_take_importance_from_l1():
    curves = order_curve_table(make_tables())
    random = curves[("m", "t", "random", "order")]
    # at ratio 1: draws give 0.2, 0.3, 0.4 (+0.01 for seed 1): mean 0.305 over 6 curves
    mean, std, count, pruned = random[1.0]
    assert count == 6 and pruned == 1.0
    assert mean == pytest.approx((0.2 + 0.3 + 0.4) / 3 + 0.005)
    importance = curves[("m", "t", "importance", "order")]
    assert importance[1.0][0] == pytest.approx(0.5)  # l1, not l2 (0.4)
    assert ("m", "t", "ablation", "estimator") in curves


def test_orders_findings_rank_the_orders_by_mean_relative_performance():
    (sentence,) = orders_findings(make_tables())
    # areas: importance (1 + .75 + .5)/3 = .75; avoid-middle (1 + .7 + .4)/3 = .7;
    # random (1.005 + .655 + .305)/3 = .655; middle (1 + .55 + .1)/3 = .55
    assert "importance 0.750, avoid-middle 0.700, random 0.655, middle 0.550" in sentence
    assert "importance order ranks 1 of 4" in sentence
    assert "avoid-middle > middle" in sentence


def test_sparsity_findings_name_the_largest_level_still_above_90_percent():
    sentences = sparsity_findings(make_tables())
    assert len(sentences) == 1
    # relative 1, 0.85, 0.7, 0.55: >= 90% only unpruned, which is not keeping it at all
    assert "is below 90% of the unpruned model already at 30% sparsity" in sentences[0]
    assert "up to 0%" not in sentences[0]
    assert "relative 1.000 at 0%, 0.850 at 30%, 0.700 at 60%, 0.550 at 90%" in sentences[0]
    assert "masked-LM loss 2.000 → 2.900" in sentences[0]


def test_companion_sections_figures_and_findings_in_the_report(tmp_path):
    tables = make_tables()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a section or figure left out would warn
        paths = write_report(tmp_path, tables, {"name": "companion"})
    names = {path.name for path in paths["figures"]}
    for stem in ("orders-m", "compensation-m", "estimator-curves-m", "sparsity-m"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    markdown = paths["markdown"].read_text()
    for title in ("Pruning orders: importance, random and layer location",
                  "Fine-tuning after pruning, and compensation",
                  "Importance estimators against exact ablation",
                  "Weight-magnitude pruning (Gordon et al.)"):
        assert title in markdown
    findings = " ".join(headline_findings(tables))
    assert "Spearman ρ with exact ablation: gradient 0.80, magnitude 0.30" in findings
    # top-10% share mean over 4 pruned models: (0.15 + 0.25) / 2 = 20%
    assert "the top 10% of the remaining heads carry 20% of the gain in share" in findings
    assert "importance 0.650 → 0.950" in findings
