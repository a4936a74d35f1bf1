"""Compensation summaries against brute-force definitions and hand-computed cases."""

import itertools
import math

import pytest
import torch

from headcount.compensation import compensation_record, gini, top_share


def brute_gini(values):
    n = len(values)
    mean = sum(values) / n
    return sum(abs(a - b) for a, b in itertools.product(values, values)) / (2 * n * n * mean)


@pytest.mark.parametrize("values", [
    [1.0, 1.0, 1.0, 1.0],
    [0.0, 0.0, 0.0, 1.0],
    [3.0, 1.0, 2.0],
    [0.5, 0.0, 7.25, 1.5, 2.0, 0.125],
])
def test_gini_equals_mean_absolute_difference(values):
    assert gini(torch.tensor(values)) == pytest.approx(brute_gini(values), abs=1e-12)


def test_gini_hand_cases():
    assert gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert gini(torch.tensor([0.0, 0.0, 0.0, 5.0])) == pytest.approx(0.75)  # (n-1)/n
    assert math.isnan(gini(torch.zeros(3)))
    with pytest.raises(ValueError):
        gini(torch.tensor([1.0, -1.0]))


def test_top_share_hand_cases():
    # 20 values: the top 10% is 2 values.
    values = torch.tensor([10.0, 5.0] + [1.0] * 18)
    assert top_share(values) == pytest.approx(15 / 33)
    # 5 values: ceil(0.5) = 1 value.
    assert top_share(torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])) == pytest.approx(0.5)
    assert top_share(torch.ones(10)) == pytest.approx(0.1)
    assert math.isnan(top_share(torch.zeros(4)))


def test_compensation_record_uses_shares_of_the_heads_left():
    before = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    after = torch.tensor([[1.0, 1.0, 9.0], [2.0, 0.0, 0.0]])  # removed heads' values ignored
    kept = [[0, 1], [0]]
    record = compensation_record(before, after, kept)
    assert record["heads_remaining"] == 3
    # shares before 1/4, 2/4, 1/4; after 1/4, 1/4, 2/4
    changes = [h["share_change"] for h in record["per_head"]]
    assert changes == pytest.approx([0.0, -0.25, 0.25])
    assert [h["change"] for h in record["per_head"]] == [0.0, -1.0, 1.0]
    assert record["total_before"] == 4.0 and record["total_after"] == 4.0
    assert record["total_share_gain"] == pytest.approx(0.25)
    assert record["heads_gaining"] == 1
    assert record["per_layer"][0]["share_change"] == pytest.approx(-0.25)
    assert record["per_layer"][1]["share_before"] == pytest.approx(0.25)
    assert record["per_layer"][1]["share_after"] == pytest.approx(0.5)
    # gains [0, 0, 0.25]: the top head (ceil(0.3) = 1) carries all of it
    assert record["top10_share"] == pytest.approx(1.0)
    assert record["gini"] == pytest.approx(brute_gini([0.0, 0.0, 0.25]))


def test_a_uniform_rescaling_is_no_compensation():
    """Fine-tuning lowers the loss and with it every raw gradient alike: no share moves."""
    before = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    record = compensation_record(before, before / 10, [[0, 1], [0, 1]])
    assert all(abs(h["share_change"]) < 1e-12 for h in record["per_head"])
    assert math.isnan(record["top10_share"]) and math.isnan(record["gini"])


def test_compensation_record_checks_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        compensation_record(torch.zeros(2, 3), torch.zeros(3, 2), [[0], [0]])
    with pytest.raises(ValueError, match="layers of kept heads"):
        compensation_record(torch.zeros(2, 3), torch.zeros(2, 3), [[0]])


def test_compensation_command_reads_the_heads_left_from_the_pruned_checkpoint(tmp_path, capsys):
    import json

    from conftest import make_model, write_tokenizer

    from headcount.checkpoints import save_pruned
    from headcount.cli.app import main
    from headcount.removal import remove_heads

    model = make_model("bert")
    remove_heads(model, [(0, 2), (0, 3)])
    pruned = tmp_path / "pruned"
    save_pruned(model, pruned)
    write_tokenizer(pruned)
    before = {"raw_scores": [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]}
    after = {"raw_scores": [[1.5, 1.0, 5.0, 5.0], [1.0, 1.0, 1.0, 3.0]]}
    for name, record in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    out = tmp_path / "compensation.json"
    assert main(["compensation", str(pruned), "--before", str(tmp_path / "before.json"),
                 "--after", str(tmp_path / "after.json"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    # the removed heads 0.2 and 0.3 are not counted, whatever their scores say
    assert record["heads_remaining"] == 6
    # shares before: 1/6 each; after (1.5, 1, 1, 1, 1, 3) / 8.5
    gains = [max(v / 8.5 - 1 / 6, 0) for v in (1.5, 1, 1, 1, 1, 3)]
    assert record["total_share_gain"] == pytest.approx(sum(gains))
    assert record["top10_share"] == pytest.approx(max(gains) / sum(gains))  # 1 of 6 heads
    assert record["gini"] == pytest.approx(brute_gini(gains))
    assert [layer["heads"] for layer in record["per_layer"]] == [2, 4]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("layer 0:   2 heads, importance 2 -> 2.5, share of the total "
                        "0.333 -> 0.294")
    assert "2 gain share, the top 10% carry" in lines[-1]
    # scores of different estimators are refused in one line
    (tmp_path / "after.json").write_text(json.dumps({**after, "estimator": "ablation"}))
    assert main(["compensation", str(pruned), "--before", str(tmp_path / "before.json"),
                 "--after", str(tmp_path / "after.json"), "--out",
                 str(tmp_path / "other.json")]) == 2
    assert "different estimators" in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()


def test_study_rows_recompute_the_summaries_from_the_saved_heads():
    from headcount.study.companion import compensation_rows

    before = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0]],
                          dtype=torch.float64)
    after = torch.tensor([[2.0, 2.0, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 4.0]],
                         dtype=torch.float64)
    kept = [[0, 1, 2], [], [0, 2]]  # layer 1 lost every head
    record = compensation_record(before, after, kept)
    stale = {**record, "top10_share": -1.0, "gini": -1.0}  # e.g. saved by older code
    summary, layers, heads = compensation_rows(
        "m", "t", 0, {"order": "random", "ratio": 0.5, "compensation": stale})
    assert summary[0]["top10_share"] == pytest.approx(record["top10_share"])
    assert summary[0]["gini"] == pytest.approx(record["gini"])
    assert [row["heads"] for row in layers] == [3, 0, 2]
    assert len(heads) == 5
