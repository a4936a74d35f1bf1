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


def test_compensation_record_ignores_removed_heads_and_sums_per_layer():
    before = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])
    after = torch.tensor([[1.5, 1.0, 9.0], [2.5, 0.0, 0.0]])  # removed heads' values ignored
    kept = [[0, 1], [0]]
    record = compensation_record(before, after, kept)
    assert record["heads_remaining"] == 3
    assert [h["change"] for h in record["per_head"]] == [0.5, -1.0, 2.0]
    assert record["total_increase"] == pytest.approx(2.5)
    assert record["total_decrease"] == pytest.approx(1.0)
    assert record["heads_increased"] == 2
    assert record["per_layer"][0]["change_sum"] == pytest.approx(-0.5)
    assert record["per_layer"][1]["change_mean"] == pytest.approx(2.0)
    # increases [0.5, 0, 2]: top 10% of 3 heads is 1 head carrying 2 / 2.5
    assert record["top10_share"] == pytest.approx(0.8)
    assert record["gini"] == pytest.approx(brute_gini([0.5, 0.0, 2.0]))


def test_compensation_record_checks_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        compensation_record(torch.zeros(2, 3), torch.zeros(3, 2), [[0], [0]])
    with pytest.raises(ValueError, match="layers of kept heads"):
        compensation_record(torch.zeros(2, 3), torch.zeros(2, 3), [[0]])
