"""The report's opening table, "The paper's claims, and this run", on hand-made tables whose
verdicts are known: each claim agrees, disagrees, or is inconclusive here for a stated
reason."""

from __future__ import annotations

import re

import pytest

from headcount.report.assemble import write_report
from headcount.report.claims import CLAIMS, claim_rows, claims_section

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


def curve(values, *, model="m", task="t", normalize="l1", seeds=(0, 1), spread=0.0,
          kind="downstream", order=None, draws=1, value_scale=0.8):
    """Curve rows with mean relative `values` at RATIOS; seed i is shifted by ±spread."""
    rows = []
    for index, seed in enumerate(seeds):
        shift = spread * (1 if index % 2 == 0 else -1) if len(seeds) > 1 else 0.0
        for draw in range(draws):
            for ratio, value in zip(RATIOS, values, strict=True):
                relative = value + (shift if ratio > 0 else 0.0)
                row = {"model": model, "task": task, "curve": kind, "seed": seed,
                       "normalize": normalize, "rank_task": task, "schedule": "one-shot",
                       "ratio_requested": ratio, "ratio_pruned": ratio, "main": True,
                       "metric": "recall@1" if kind == "pretrain" else "accuracy",
                       "value": value_scale * relative, "relative": relative}
                if order is not None:
                    row.update(order=order, family="order", draw=draw, normalize="none",
                               rank_task=f"order:{order}")
                rows.append(row)
    return rows


STRONG_MLM = curve((1.0, 0.9, 0.8, 0.7, 0.1), task="mlm", kind="pretrain", value_scale=0.5)
WEAK_MLM = curve((1.0, 1.02, 1.03, 1.03, 1.03), task="mlm", kind="pretrain",
                 value_scale=0.12)


def verdict(tables: dict, index: int) -> tuple[str, str, str]:
    """(verdict, reason, this run's text) of claim `index` of CLAIMS."""
    row = claim_rows(tables, (CLAIMS[index],))[0]
    return row.verdict.verdict, row.verdict.reason, row.run


def claim_index(words: str) -> int:
    return next(i for i, claim in enumerate(CLAIMS) if words in claim.claim)


HALF = claim_index("more than half of its heads")
L1 = claim_index("l1 normalisation")
MORE_HEADS = claim_index("more heads")
MLM_HALF = claim_index("masked-LM performance")
RECALL = claim_index("recall")
DRIFT = claim_index("lower layers least")
FROZEN = claim_index("frozen")
CORRELATION = claim_index("correlates")
RANDOM = claim_index("at random")
TOP_BOTTOM = claim_index("top or the bottom")
AVOID = claim_index("middle layers")
ADJACENT = claim_index("non-adjacent")
EVEN = claim_index("compensate")
HARMLESS = claim_index("30–40%")
AFTER = claim_index("after fine-tuning is no better")


def test_every_claim_of_the_issue_has_a_row():
    assert len(CLAIMS) == 15
    assert len({HALF, L1, MORE_HEADS, MLM_HALF, RECALL, DRIFT, FROZEN, CORRELATION, RANDOM,
                TOP_BOTTOM, AVOID, ADJACENT, EVEN, HARMLESS, AFTER}) == 15
    for row in claim_rows({}):
        assert row.verdict.text == "inconclusive here: not measured in this run"


@pytest.mark.parametrize(("values", "spread", "expected"), [
    ((1.0, 0.97, 0.95, 0.92, 0.5), 0.0, "agrees"),      # >= 90% up to 75% pruned
    ((1.0, 0.97, 0.92, 0.80, 0.5), 0.0, "disagrees"),   # only up to 50%: not more than half
    ((1.0, 0.97, 0.95, 0.92, 0.5), 0.05, "inconclusive"),  # seed 1 falls below at 75%
    ((1.0, 0.85, 0.80, 0.75, 0.5), 0.0, "disagrees"),   # below from the first ratio
])
def test_more_than_half_of_the_heads_pruned(values, spread, expected):
    result = verdict({"curves": curve(values, spread=spread)}, HALF)
    assert result[0] == expected
    assert "up to 0%" not in result[2]
    if values[1] < 0.9:
        assert "below 90% from the first ratio pruned" in result[2]


def test_l1_against_l2():
    l1 = curve((1.0, 0.97, 0.95, 0.92, 0.5))
    assert verdict({"curves": l1 + curve((1.0, 0.9, 0.8, 0.7, 0.5), normalize="l2")},
                   L1)[0] == "agrees"
    assert verdict({"curves": l1 + curve((1.0, 0.99, 0.97, 0.95, 0.6), normalize="l2")},
                   L1)[0] == "disagrees"
    noisy = curve((1.0, 0.97, 0.95, 0.92, 0.5), spread=0.1)
    close = curve((1.0, 0.96, 0.95, 0.92, 0.5), normalize="l2", spread=0.1)
    result = verdict({"curves": noisy + close}, L1)
    assert result[0] == "inconclusive" and result[1].startswith("seeds differ by")
    assert verdict({"curves": l1}, L1)[1] == "l1 and another normalisation not both run"


def importance_rows(model: str, layers: int, heads: int) -> list[dict]:
    return [{"model": model, "task": "t", "seed": 0, "layer": layer, "head": head, "raw": 1.0}
            for layer in range(layers) for head in range(heads)]


def test_the_model_with_more_heads():
    big = curve((1.0, 0.97, 0.95, 0.92, 0.5), model="big")
    small = curve((1.0, 0.95, 0.8, 0.6, 0.3), model="small")
    assert verdict({"curves": big}, MORE_HEADS)[:2] == ("inconclusive",
                                                        "one model in this run")
    tables = {"curves": big + small,
              "importance": importance_rows("big", 4, 8) + importance_rows("small", 2, 4)}
    assert verdict(tables, MORE_HEADS)[0] == "agrees"
    tables["importance"] = importance_rows("big", 2, 4) + importance_rows("small", 4, 8)
    assert verdict(tables, MORE_HEADS)[0] == "disagrees"


def test_masked_lm_claims_need_a_readable_masked_lm():
    result = verdict({"curves": WEAK_MLM}, MLM_HALF)
    assert result[0] == "inconclusive" and "the masked LM is weak" in result[1]
    assert verdict({"curves": STRONG_MLM}, MLM_HALF)[0] == "disagrees"  # 75% up to 50% only
    keeps = curve((1.0, 0.9, 0.85, 0.8, 0.1), task="mlm", kind="pretrain", value_scale=0.5)
    assert verdict({"curves": keeps}, MLM_HALF)[0] == "agrees"


def recall_rows(reached: float) -> list[dict]:
    return [{"model": "m", "task": "t", "normalize": "l1", "x": i / 20, "threshold": 0.9,
             "recall_mean": 0.95 if i / 20 >= reached - 1e-9 else 0.5, "recall_std": 0.0,
             "n": 2} for i in range(21)]


def test_recall_guideline():
    assert verdict({"curves": STRONG_MLM, "recall": recall_rows(0.7)}, RECALL)[0] == "agrees"
    assert verdict({"curves": STRONG_MLM, "recall": recall_rows(0.95)},
                   RECALL)[0] == "disagrees"
    result = verdict({"curves": WEAK_MLM, "recall": recall_rows(0.7)}, RECALL)
    assert result[0] == "inconclusive" and "weak" in result[1]


def drift_rows(js: list[tuple[float, float]], l2=(1.0, 2.0, 3.0)) -> list[dict]:
    """Per layer, JS divergence of seed 0 and seed 1."""
    return [{"model": "m", "task": "t", "seed": seed, "layer": layer, "js_mean": pair[seed],
             "js_max": 2 * pair[seed], "l2": l2[layer]}
            for layer, pair in enumerate(js) for seed in (0, 1)]


def test_lower_layers_drift_least():
    assert verdict({"drift_layers": drift_rows([(0.01, 0.02), (0.05, 0.05), (0.2, 0.3)])},
                   DRIFT)[0] == "agrees"
    assert verdict({"drift_layers": drift_rows([(0.3, 0.2), (0.05, 0.05), (0.01, 0.02)])},
                   DRIFT)[0] == "disagrees"
    result = verdict({"drift_layers": drift_rows([(0.01, 0.4), (0.05, 0.05), (0.2, 0.1)])},
                     DRIFT)
    assert result[:2] == ("inconclusive", "the seeds disagree")
    assert "(layer 0) vs" in result[2]


def freezing_tables(relative: float, *, falling: bool, task="t") -> dict:
    finetune, freezing = [], []
    for seed in (0, 1):
        quarters = (0.77, 0.60) if falling else (0.30, 0.29)
        base = {"model": "m", "task": task, "seed": seed, "metric": "accuracy", "main": True,
                "loss_previous_quarter": quarters[0], "loss_last_quarter": quarters[1]}
        finetune += [{**base, "kind": "full", "freeze_layers": 0},
                     {**base, "kind": "frozen", "freeze_layers": 5}]
        freezing.append({"model": "m", "task": task, "seed": seed, "freeze_layers": 5,
                         "metric": "accuracy", "value": relative, "full_value": 1.0,
                         "relative": relative})
    return {"finetune": finetune, "freezing": freezing,
            "importance": importance_rows("m", 6, 12)}


def test_frozen_layers():
    result = verdict(freezing_tables(0.62, falling=True), FROZEN)
    assert result[0] == "inconclusive" and "had not converged" in result[1]
    assert "0.62 with 5 of 6 layers frozen" in result[2]
    assert verdict(freezing_tables(0.62, falling=False), FROZEN)[0] == "disagrees"
    assert verdict(freezing_tables(0.99, falling=False), FROZEN)[0] == "agrees"
    # CoLA's threshold is 0.91, the other tasks' 0.98
    assert verdict(freezing_tables(0.93, falling=False, task="CoLA"), FROZEN)[0] == "agrees"
    assert verdict(freezing_tables(0.93, falling=False), FROZEN)[0] == "disagrees"


def correlation_rows(r_down: tuple, r_pre: tuple) -> list[dict]:
    return [{"model": "m", "task": "t", "seed": seed, "importance": kind, "normalize": "l1",
             "n": 72, "pearson_r": values[seed]}
            for kind, values in (("downstream", r_down), ("pretrain", r_pre))
            for seed in (0, 1)]


def test_importance_hardly_correlates_with_drift():
    tables = {"curves": STRONG_MLM, "correlation": correlation_rows((0.05, 0.07), (0.0, 0.1))}
    assert verdict(tables, CORRELATION)[0] == "agrees"
    tables["correlation"] = correlation_rows((0.3, 0.25), (0.0, 0.05))
    assert verdict(tables, CORRELATION)[0] == "disagrees"
    tables["correlation"] = correlation_rows((0.05, 0.15), (0.0, 0.05))
    assert verdict(tables, CORRELATION)[:2] == ("inconclusive",
                                                "the seeds fall on both sides of 0.10")
    weak = {"curves": WEAK_MLM, "correlation": correlation_rows((0.05, 0.07), (0.3, 0.3))}
    result = verdict(weak, CORRELATION)  # pre-train importance of a weak masked LM
    assert result[0] == "inconclusive" and "weak" in result[1]


def orders(**values) -> list[dict]:
    rows = []
    for order, (curve_values, spread) in values.items():
        rows += curve(curve_values, order=order, spread=spread,
                      draws=2 if order == "random" else 1)
    return rows


def test_random_pruning_of_a_large_fraction():
    tables = {"order_curves": orders(random=((1.0, 0.97, 0.93, 0.8, 0.4), 0.0))}
    assert verdict(tables, RANDOM)[0] == "agrees"
    tables = {"order_curves": orders(random=((1.0, 0.9, 0.8, 0.7, 0.4), 0.0))}
    result = verdict(tables, RANDOM)
    assert result[0] == "disagrees" and "up to 0%" not in result[2]
    tables = {"order_curves": orders(random=((1.0, 0.97, 0.93, 0.8, 0.4), 0.05))}
    assert verdict(tables, RANDOM)[:2] == ("inconclusive", "the seeds and draws disagree")


def test_layer_order_contrasts():
    same = orders(top=((1.0, 0.9, 0.8, 0.6, 0.4), 0.05),
                  bottom=((1.0, 0.92, 0.8, 0.6, 0.4), 0.05))
    assert verdict({"order_curves": same}, TOP_BOTTOM)[0] == "agrees"
    apart = orders(top=((1.0, 0.5, 0.4, 0.4, 0.4), 0.01),
                   bottom=((1.0, 0.95, 0.9, 0.8, 0.4), 0.01))
    assert verdict({"order_curves": apart}, TOP_BOTTOM)[0] == "disagrees"
    tables = {"order_curves": orders(**{"avoid-middle": ((1.0, 0.6, 0.5, 0.4, 0.4), 0.01),
                                        "middle": ((1.0, 0.95, 0.9, 0.8, 0.4), 0.01)})}
    result = verdict(tables, AVOID)
    assert result[0] == "disagrees" and "avoid-middle 0.580, middle 0.810" in result[2]
    tables = {"order_curves": orders(**{"non-adjacent": ((1.0, 0.95, 0.9, 0.8, 0.4), 0.1),
                                        "consecutive": ((1.0, 0.93, 0.9, 0.8, 0.4), 0.1)})}
    assert verdict(tables, ADJACENT)[0] == "inconclusive"


def test_a_task_the_model_has_not_learned_makes_its_claims_inconclusive():
    """A model that keeps its score with every head pruned answers alike for every input:
    curves that cannot be told apart are no agreement, and a curve that stays high is no
    finding."""
    unlearned = curve((1.0, 1.0, 1.0, 0.99, 0.99))
    same = orders(top=((1.0, 1.0, 1.0, 0.99, 0.99), 0.0),
                  bottom=((1.0, 1.0, 1.0, 0.99, 0.99), 0.0))
    for index, tables in ((TOP_BOTTOM, {"curves": unlearned, "order_curves": same}),
                          (HALF, {"curves": unlearned})):
        result = verdict(tables, index)
        assert result[0] == "inconclusive", result
        assert result[1].startswith("the fine-tuned model scores hardly better on t than one "
                                    "answer for every input (seed 0 keeps 0.99")


def test_compensation_spread_evenly():
    rows = [{"model": "m", "task": "t", "seed": seed, "order": order, "ratio": 0.5,
             "top10_share": share, "gini": 0.3}
            for seed, order, share in ((0, "importance", 0.15), (1, "importance", 0.17),
                                       (0, "random", 0.12), (1, "random", 0.14))]
    assert verdict({"compensation": rows}, EVEN)[0] == "agrees"
    uneven = [{**row, "top10_share": 0.49} for row in rows]
    result = verdict({"compensation": uneven}, EVEN)
    assert result[0] == "disagrees" and "carry 49% of the gain" in result[2]


def sparsity_rows(setting: str, relatives: dict, task="t", seeds=(0, 1)) -> list[dict]:
    return [{"model": "m", "task": task, "seed": seed, "setting": setting, "main": True,
             "sparsity_requested": level, "relative": value[index] if isinstance(value, tuple)
             else value, "metric": "accuracy"}
            for level, value in relatives.items() for index, seed in enumerate(seeds)]


def test_low_weight_sparsity_is_harmless():
    after = sparsity_rows("pruned after fine-tuning", {0.0: 1.0, 0.3: 0.99, 0.4: 0.97,
                                                       0.8: 0.3})
    assert verdict({"sparsity": after}, HARMLESS)[0] == "agrees"
    hurt = sparsity_rows("pruned after fine-tuning", {0.0: 1.0, 0.4: 0.8})
    assert verdict({"sparsity": hurt}, HARMLESS)[0] == "disagrees"
    mlm = sparsity_rows("pre-trained", {0.0: 1.0, 0.4: 1.2}, task="mlm")
    result = verdict({"sparsity": after + mlm, "curves": WEAK_MLM}, HARMLESS)
    assert result[0] == "inconclusive" and "weak" in result[1]
    none = sparsity_rows("pruned after fine-tuning", {0.0: 1.0, 0.8: 0.3})
    assert verdict({"sparsity": none}, HARMLESS)[:2] == ("inconclusive", "no sparsity of "
                                                         "30–40% measured")


def test_pruning_after_fine_tuning_is_no_better():
    before = sparsity_rows("pruned before fine-tuning", {0.0: 1.0, 0.4: (0.95, 0.97)})
    worse = sparsity_rows("pruned after fine-tuning", {0.0: 1.0, 0.4: (0.90, 0.92)})
    better = sparsity_rows("pruned after fine-tuning", {0.0: 1.0, 0.4: (0.99, 1.0)})
    assert verdict({"sparsity": before + worse}, AFTER)[0] == "agrees"
    result = verdict({"sparsity": before + better}, AFTER)
    assert result[0] == "disagrees" and "at 40%: before 0.96, after 0.99" in result[2]
    one = sparsity_rows("pruned before fine-tuning", {0.4: 0.9}, seeds=(0,)) + sparsity_rows(
        "pruned after fine-tuning", {0.4: 0.95}, seeds=(0,))
    assert verdict({"sparsity": one}, AFTER)[0] == "inconclusive"


def test_the_claims_table_opens_the_report(tmp_path):
    tables = {"curves": curve((1.0, 0.97, 0.95, 0.92, 0.5)) + WEAK_MLM,
              "recall": recall_rows(0.7), **freezing_tables(0.62, falling=True)}
    paths = write_report(tmp_path, tables, {"name": "claims"})
    markdown = paths["markdown"].read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    assert headings[:2] == ["The paper's claims, and this run", "Headline findings"]
    assert "Method notes" in headings
    claims_part = markdown.split("## Headline findings")[0]
    assert claims_part.count("\n| Chiang & Chen: ") == 8
    assert claims_part.count("\n| Budhraja et al.: ") == 5
    assert claims_part.count("\n| Gordon et al.: ") == 2
    assert "inconclusive here: the masked LM is weak" in claims_part
    html = paths["html"].read_text()
    assert html.index('id="claims"') < html.index('<nav class="toc">') < html.index(
        'id="findings"')
    assert '<table class="claims">' in html
    assert '<td class="agrees">agrees' in html and '<td class="unsure">inconclusive here' in html
    notes = markdown.split("## Method notes")[1]
    assert "Masked LM: a masked-LM result" in notes and "Freezing: a fine-tuning run" in notes


VERDICT_COLOURS = {(0xda, 0xfb, 0xe1), (0xff, 0xeb, 0xe9), (0xff, 0xf8, 0xc5)}


def test_the_first_screen_shows_the_whole_claims_table(tmp_path):
    """Headless Chromium at 1280x800: down the verdict column, one coloured cell per claim."""
    import importlib.util
    from pathlib import Path

    from test_report import synthetic_tables
    from test_report_companion import make_tables

    from headcount.report.render import render_html

    script = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"
    spec = importlib.util.spec_from_file_location("check_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.find_chromium(None) is None:
        pytest.skip("no Chromium (apt-get install -y chromium)")
    image_module = pytest.importorskip("PIL.Image")
    tables = synthetic_tables()
    tables.update({k: v for k, v in make_tables().items() if k != "curves"})
    findings = [("topic", "a finding")] * 20
    html = tmp_path / "report.html"  # what opens the report: no figures needed for it
    html.write_text(render_html("headcount study: synthetic", findings, [], [],
                                "finished 2026-05-01T11:02:03.123456+00:00 · cpu · "
                                "reproducing Chiang & Chen, “Why Can You Lay Off Heads? "
                                "Investigating How BERT Heads Transfer”",
                                claims_section(tables)))
    shot = tmp_path / "first.png"
    assert module.main([str(html), "--out", str(shot), "--first-screen"]) == 0
    with image_module.open(shot) as image:
        rgb = image.convert("RGB")
    assert rgb.height <= 800
    column = rgb.width - 60  # inside the verdict column, right of its text
    cells, inside = 0, False
    for y in range(rgb.height):
        coloured = rgb.getpixel((column, y)) in VERDICT_COLOURS
        cells += coloured and not inside
        inside = coloured
    assert cells == len(CLAIMS)
