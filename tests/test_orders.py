"""Random and layer-location pruning orders (headcount.orders) in `curve`, `prune` and plots.

Hand-written layer sequences for L=6 and L=5; curves on conftest's tiny 2-layer x 4-head
BERT (ALBERT: one shared row of 4 heads) with a few SST-2 examples and the CPU.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import make_model

from headcount.choices import LAYER_ORDERS, ORDERS
from headcount.cli.app import main
from headcount.errors import ConfigError, HeadcountError
from headcount.importance import normalize
from headcount.jobs.prepared import DataOptions
from headcount.jobs.prune import CurveRequest, curve_job
from headcount.orders import (
    head_order,
    layer_sequence,
    model_head_order,
    order_scores,
    summarize_draws,
)
from headcount.pruning import least_important_first
from headcount.recall import curve_steps_from_rows
from headcount.records import CURVE_COLUMNS, write_curve_csv

SEEDED = [name for name in ORDERS if name != "importance"]
SIZES = [(1, 1), (1, 4), (2, 3), (3, 2), (5, 4), (6, 4), (7, 3), (12, 12)]
N = 16  # SST-2 dev examples evaluated
FAST = ["--max-length", "32", "--batch-size", "8", "--device", "cpu", "--quiet"]


def all_heads(layers: int, heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(layers) for head in range(heads)]


# --------------------------------------------------------------------------- the orders


@pytest.mark.parametrize("name", SEEDED)
@pytest.mark.parametrize(("layers", "heads"), SIZES)
def test_every_order_is_a_seeded_permutation_of_all_heads(name, layers, heads):
    for seed in (0, 1, 7):
        order = head_order(name, layers, heads, seed)
        assert sorted(order) == all_heads(layers, heads)
        assert head_order(name, layers, heads, seed) == order
    if name == "random" and layers * heads >= 8:
        assert head_order(name, layers, heads, 0) != head_order(name, layers, heads, 1)


@pytest.mark.parametrize("name", LAYER_ORDERS)
@pytest.mark.parametrize(("layers", "heads"), SIZES)
def test_layer_orders_prune_whole_layers_in_their_sequence(name, layers, heads):
    for seed in (0, 3):
        order = head_order(name, layers, heads, seed)
        sequence = layer_sequence(name, layers, seed)
        assert sorted(sequence) == list(range(layers))
        assert [layer for layer, _ in order] == [i for i in sequence for _ in range(heads)]


def test_the_seed_changes_the_head_order_within_layers():
    orders = {tuple(head_order("top", 2, 6, seed)) for seed in range(5)}
    assert len(orders) > 1
    assert all([layer for layer, _ in order] == [1] * 6 + [0] * 6 for order in orders)


FIXED = {
    6: {"top": [5, 4, 3, 2, 1, 0], "bottom": [0, 1, 2, 3, 4, 5],
        "middle": [2, 3, 1, 4, 0, 5], "avoid-middle": [0, 5, 1, 4, 2, 3]},
    5: {"top": [4, 3, 2, 1, 0], "bottom": [0, 1, 2, 3, 4],
        "middle": [2, 1, 3, 0, 4], "avoid-middle": [0, 4, 1, 3, 2]},
}
CONSECUTIVE = {  # by start layer
    6: {0: [0, 1, 2, 3, 4, 5], 1: [1, 2, 3, 4, 5, 0], 2: [2, 3, 4, 5, 1, 0],
        3: [3, 4, 5, 2, 1, 0], 4: [4, 5, 3, 2, 1, 0], 5: [5, 4, 3, 2, 1, 0]},
    5: {0: [0, 1, 2, 3, 4], 1: [1, 2, 3, 4, 0], 2: [2, 3, 4, 1, 0], 3: [3, 4, 2, 1, 0],
        4: [4, 3, 2, 1, 0]},
}
NON_ADJACENT = {  # by parity
    6: {0: [0, 2, 4, 1, 3, 5], 1: [1, 3, 5, 0, 2, 4]},
    5: {0: [0, 2, 4, 1, 3], 1: [1, 3, 0, 2, 4]},
}


@pytest.mark.parametrize("layers", [6, 5])
def test_unseeded_layer_sequences_by_hand(layers):
    for name, expected in FIXED[layers].items():
        for seed in (0, 1, 2):
            assert layer_sequence(name, layers, seed) == expected, name


@pytest.mark.parametrize("layers", [6, 5])
def test_consecutive_every_start_by_hand(layers):
    seen = set()
    for seed in range(200):
        sequence = layer_sequence("consecutive", layers, seed)
        seen.add(sequence[0])
        assert sequence == CONSECUTIVE[layers][sequence[0]]
    assert seen == set(range(layers))  # the seed reaches every start


@pytest.mark.parametrize("layers", [6, 5])
def test_non_adjacent_both_parities_by_hand(layers):
    seen = set()
    for seed in range(50):
        sequence = layer_sequence("non-adjacent", layers, seed)
        seen.add(sequence[0])
        assert sequence == NON_ADJACENT[layers][sequence[0]]
    assert seen == {0, 1}


@pytest.mark.parametrize("layers", range(1, 10))
def test_consecutive_is_always_one_block(layers):
    for seed in range(30):
        sequence = layer_sequence("consecutive", layers, seed)
        for count in range(1, layers + 1):
            gone = sequence[:count]
            assert max(gone) - min(gone) + 1 == count, (sequence, count)


@pytest.mark.parametrize("layers", range(1, 10))
def test_non_adjacent_never_prunes_neighbours_first(layers):
    for seed in range(30):
        sequence = layer_sequence("non-adjacent", layers, seed)
        parity = sequence[0]  # p, or 0 when L=1 (then either parity reads as 0)
        spread = len(range(parity, layers, 2))  # ceil(L/2) unless L odd and parity 1
        assert spread >= layers // 2
        if parity == 0:
            assert spread == math.ceil(layers / 2)
        for count in range(1, spread + 1):
            gone = sorted(sequence[:count])
            assert all(b - a >= 2 for a, b in zip(gone, gone[1:], strict=False)), sequence


def test_bad_names_and_sizes():
    with pytest.raises(ConfigError, match="Unknown order 'sideways'.*random"):
        head_order("sideways", 2, 2)
    with pytest.raises(ConfigError, match="importance"):
        head_order("importance", 2, 2)
    with pytest.raises(ConfigError, match="random.*not a layer order"):
        layer_sequence("random", 3)
    with pytest.raises(ConfigError, match="0 layers"):
        head_order("top", 0, 4)


@pytest.mark.parametrize("name", SEEDED)
def test_order_scores_give_the_order_back(name):
    order = head_order(name, 3, 5, seed=4)
    scores = order_scores(order, 3, 5)
    assert least_important_first(normalize(scores, "none")) == order
    for position, (layer, head) in enumerate(order):
        assert scores[layer, head] == position
    pruned = set(order[:4])
    assert least_important_first(scores, exclude=pruned) == order[4:]


def test_order_scores_refuse_what_is_not_a_permutation():
    heads = all_heads(2, 2)
    for bad in (heads[:3], heads + [(0, 0)], heads[:3] + [(2, 0)], heads[:3] + [heads[0]]):
        with pytest.raises(ConfigError, match="each of the 2 x 2 heads once"):
            order_scores(bad, 2, 2)


def test_albert_has_no_layer_location():
    model = make_model("albert")
    for name in LAYER_ORDERS:
        with pytest.raises(ConfigError, match=f"--order {name}.*importance and random"):
            model_head_order(model, name)
    order = model_head_order(model, "random", seed=2)
    assert sorted(order) == all_heads(1, 4)
    assert order == head_order("random", 1, 4, seed=2)


def test_model_order_uses_distinct_layers():
    model = make_model("distilbert")
    assert model_head_order(model, "top", seed=5) == head_order("top", 2, 4, seed=5)


# --------------------------------------------------------------------------- summarize_draws


def test_summarize_draws_by_hand():
    def row(draw, ratio, value, relative, metric="accuracy"):
        return {"model": "m", "task": "t", "seed": 0, "order": "random", "draw": draw,
                "ratio_requested": ratio, "ratio_pruned": ratio, "heads_remaining": 9,
                "metric": metric, "value": value, "relative": relative, "main": True,
                "pruned_heads": f"0.{draw}"}

    rows = [row(0, 0.5, 0.5, 1.0), row(1, 0.5, 0.7, 0.5), row(2, 0.5, 0.9, 0.0),
            row(0, 1.0, 0.25, 0.1), row(0, 0.5, 4.0, 2.0, metric="f1")]
    summary = summarize_draws(rows)
    assert [(p["ratio_requested"], p["metric"], p["n"]) for p in summary] == [
        (0.5, "accuracy", 3), (1.0, "accuracy", 1), (0.5, "f1", 1)]
    first = summary[0]
    assert first["value_mean"] == pytest.approx(0.7)
    # sample std: sqrt(((0.5-0.7)^2 + 0 + (0.9-0.7)^2) / 2) = 0.2
    assert first["value_std"] == pytest.approx(0.2)
    assert first["relative_mean"] == pytest.approx(0.5)
    assert first["relative_std"] == pytest.approx(0.5)
    assert first["order"] == "random" and "draw" not in first and "pruned_heads" not in first
    assert math.isnan(summary[1]["value_std"]) and summary[1]["value_mean"] == 0.25
    # strings, as read back from a CSV, give the same numbers
    text = [{key: str(value) for key, value in r.items()} for r in rows]
    assert summarize_draws(text)[0]["value_std"] == pytest.approx(0.2)


# --------------------------------------------------------------------------- curves


def sst2(glue_dir, seed: int = 0) -> DataOptions:
    return DataOptions("sst2", data_dir=str(glue_dir), split="dev", max_examples=N,
                       batch_size=8, max_length=32, seed=seed)


def curve(checkpoint, glue_dir, seed=0, **kwargs) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no trained classification head"
        return curve_job(str(checkpoint), sst2(glue_dir, seed), CurveRequest(**kwargs),
                         device="cpu")


def pruned_of(row: dict) -> list[tuple[int, int]]:
    return [tuple(map(int, name.split("."))) for name in row["pruned_heads"].split()]


def test_top_order_curve_prunes_the_top_layer_first(checkpoints, glue_dir):
    ratios = [0.25, 0.5, 0.625, 0.75, 1.0]
    rows = curve(checkpoints["cls2"], glue_dir, seed=3, order="top", ratios=ratios)
    expected = head_order("top", 2, 4, seed=3)
    assert [row["ratio_requested"] for row in rows] == [0.0, *ratios]
    for row in rows:
        pruned = pruned_of(row)
        count = round(row["ratio_requested"] * 8)
        assert pruned == expected[:count]  # in the order's own sequence
        # the top layer first: layer 0 only once all of layer 1 is gone
        assert [layer for layer, _ in pruned] == ([1] * min(count, 4) + [0] * (count - 4))
        assert (row["order"], row["draw"], row["rank_task"]) == ("top", 0, "order:top")
        assert (row["normalize"], row["seed"]) == ("none", 3)
    masked = curve(checkpoints["cls2"], glue_dir, seed=3, order="top", ratios=ratios,
                   physical=False)
    for a, b in zip(rows, masked, strict=True):
        assert a["pruned_heads"] == b["pruned_heads"]
        assert a["value"] == pytest.approx(b["value"], abs=1e-6)


def test_layer_order_with_keep_one_per_layer(checkpoints, glue_dir):
    rows = curve(checkpoints["cls2"], glue_dir, order="bottom", keep_one_per_layer=True,
                 seed=1)
    expected = head_order("bottom", 2, 4, seed=1)
    # layer 0 loses all but its last head in the order, then layer 1 likewise
    kept_order = expected[:3] + expected[4:7]
    last = pruned_of(rows[-1])
    assert last == kept_order
    assert int(rows[-1]["heads_remaining"]) == 2
    for row in rows:
        assert pruned_of(row) == kept_order[:len(pruned_of(row))]


def test_random_draws(checkpoints, glue_dir):
    rows = curve(checkpoints["cls2"], glue_dir, seed=5, order="random", draws=3,
                 ratios=[0.5, 1.0])
    assert [row["draw"] for row in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for draw in range(3):
        mine = [row for row in rows if row["draw"] == draw]
        order = head_order("random", 2, 4, seed=5 + draw)
        assert [pruned_of(row) for row in mine] == [[], order[:4], order]
        assert all(row["seed"] == 5 and row["order"] == "random" for row in mine)
    # every draw is evaluated on the same examples: the same unpruned and all-pruned value
    for ratio in (0.0, 1.0):
        assert len({row["value"] for row in rows if row["ratio_requested"] == ratio}) == 1
    half = [row for row in rows if row["ratio_requested"] == 0.5]
    assert len({row["pruned_heads"] for row in half}) == 3
    values = [row["value"] for row in half]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    point = [p for p in summarize_draws(rows) if p["ratio_requested"] == 0.5]
    assert len(point) == 1 and point[0]["n"] == 3
    assert point[0]["value_mean"] == pytest.approx(mean)
    assert point[0]["value_std"] == pytest.approx(std)
    relatives = [row["relative"] for row in half]
    assert point[0]["relative_mean"] == pytest.approx(sum(relatives) / 3)


def test_importance_rows_have_order_and_draw_columns(checkpoints, glue_dir, tmp_path):
    rows = curve(checkpoints["cls2"], glue_dir, ratios=[0.5],
                 rank_options=sst2(glue_dir))
    assert all((row["order"], row["draw"]) == ("importance", 0) for row in rows)
    assert list(rows[0]) == list(CURVE_COLUMNS)
    out = write_curve_csv(tmp_path / "c.csv", rows)
    with out.open(newline="") as file:
        assert next(csv.reader(file))[-4:] == ["order", "draw", "units", "neurons_remaining"]


def test_albert_random_curve_and_layer_order_error(checkpoints, glue_dir):
    rows = curve(checkpoints["albert-cls2"], glue_dir, order="random", draws=2,
                 ratios=[0.5])
    for draw in range(2):
        order = head_order("random", 1, 4, seed=draw)
        mine = [row for row in rows if row["draw"] == draw]
        assert pruned_of(mine[-1]) == order[:2]
    with pytest.raises(ConfigError, match="--order top.*only the importance and random"):
        curve(checkpoints["albert-cls2"], glue_dir, order="top")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"order": "random", "scores_path": "s.json"}, "--order random does not use --scores"),
    ({"order": "top", "rank_task": "rte"}, "--order top does not use --rank-task"),
    ({"order": "middle", "normalize_method": "l2"}, "does not use --normalize"),
    ({"order": "random", "schedule": "iterative"}, "iterative"),
    ({"order": "sideways"}, "Unknown order 'sideways'"),
    ({"order": "random", "draws": 0}, "--draws 0"),
    ({"draws": 3}, "--draws 3"),
])
def test_curve_order_mistakes(checkpoints, glue_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        curve(checkpoints["cls2"], glue_dir, **kwargs)


def test_recall_refuses_curves_of_another_order():
    rows = [{"main": "True", "seed": "0", "order": "random", "heads_remaining": "8",
             "pruned_heads": "", "ratio_pruned": "0.0", "relative": "1.0"}]
    with pytest.raises(HeadcountError, match="random order"):
        curve_steps_from_rows(rows, "c.csv")


# --------------------------------------------------------------------------- CLI


def cli(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sst2_args(glue_dir) -> list:
    return ["--task", "sst2", "--data-dir", glue_dir, "--split", "dev", "--max-examples", N]


def test_cli_random_curve_prints_mean_and_std(capsys, checkpoints, glue_dir, tmp_path):
    out = tmp_path / "random.csv"
    code, stdout, err = cli(capsys, "curve", checkpoints["cls2"], *sst2_args(glue_dir),
                            "--order", "random", "--ratios", 0.5, *FAST, "--out", out)
    assert code == 0, err
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["draw"] for row in rows] == ["0", "0", "1", "1", "2", "2", "3", "3", "4", "4"]
    lines = stdout.splitlines()
    assert len(lines) == 3  # ratio 0, ratio 0.5, the summary
    assert "± 0.0000" in lines[0] and "over 5 random draws" in lines[0]
    half = [float(row["value"]) for row in rows if row["ratio_requested"] == "0.5"]
    mean = sum(half) / 5
    assert f"accuracy={mean:.4f} ± " in lines[1]


@pytest.mark.parametrize(("args", "expected"), [
    (["--order", "random", "--scores", "s.json"], "--order random does not use --scores"),
    (["--order", "diagonal"], "Unknown order 'diagonal'"),
    (["--order", "top", "--schedule", "iterative"], "iterative"),
])
def test_cli_curve_order_mistakes_are_one_line(capsys, checkpoints, glue_dir, tmp_path, args,
                                               expected):
    code, stdout, err = cli(capsys, "curve", checkpoints["cls2"], *sst2_args(glue_dir),
                            *args, *FAST, "--out", tmp_path / "c.csv")
    assert code == 2 and stdout == ""
    assert err.splitlines() == [err.strip()] and expected in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_cli_albert_layer_order_is_one_line(capsys, checkpoints, glue_dir, tmp_path):
    code, _, err = cli(capsys, "curve", checkpoints["albert-cls2"], *sst2_args(glue_dir),
                       "--order", "bottom", *FAST, "--out", tmp_path / "c.csv")
    assert code == 2 and "--order bottom" in err and "importance and random" in err


def removed_heads(directory: Path) -> set[tuple[int, int]]:
    removed = json.loads((directory / "heads.json").read_text())["removed"]
    return {(layer, head) for layer, heads in enumerate(removed) for head in heads}


@pytest.mark.parametrize(("order", "amount", "count"), [
    ("top", ["--heads", 3], 3), ("random", ["--ratio", 0.5], 4),
    ("consecutive", ["--heads", 5], 5),
])
def test_prune_by_order_removes_the_orders_first_heads(capsys, checkpoints, tmp_path, order,
                                                       amount, count):
    out = tmp_path / "pruned"
    code, stdout, err = cli(capsys, "prune", checkpoints["cls2"], "--order", order, "--seed",
                            2, *amount, "--out", out)
    assert code == 0, err
    assert removed_heads(out) == set(head_order(order, 2, 4, seed=2)[:count])
    assert stdout.startswith(f"removed {count} heads in {order} order (seed 2) "
                             f"({8 - count} left)")


def test_prune_by_order_on_a_pruned_checkpoint_skips_absent_heads(capsys, checkpoints,
                                                                  tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli(capsys, "prune", checkpoints["cls2"], "--order", "top", "--heads", 2,
               "--out", first)[0] == 0
    assert cli(capsys, "prune", first, "--order", "top", "--heads", 5, "--out", second)[0] == 0
    order = head_order("top", 2, 4, seed=0)
    assert removed_heads(second) == set(order[:2]) | set(order[:5])


@pytest.mark.parametrize(("args", "expected"), [
    (["--order", "top", "--scores", "s.json"], None),  # argparse: one or the other
    ([], None),
    (["--order", "importance"], "--order importance needs scores"),
    (["--order", "top", "--normalize", "l1"], "--order top does not use --normalize"),
])
def test_prune_order_mistakes(capsys, checkpoints, tmp_path, args, expected):
    if expected is None:
        with pytest.raises(SystemExit) as exit_info:
            main(["prune", str(checkpoints["cls2"]), *args, "--heads", "2",
                  "--out", str(tmp_path / "p")])
        assert exit_info.value.code == 2
    else:
        code, _, err = cli(capsys, "prune", checkpoints["cls2"], *args, "--heads", 2,
                           "--out", tmp_path / "p")
        assert code == 2 and expected in err
    assert list(tmp_path.iterdir()) == []


def test_prune_albert_layer_order_is_an_error(capsys, checkpoints, tmp_path):
    code, _, err = cli(capsys, "prune", checkpoints["albert-cls2"], "--order", "middle",
                       "--heads", 1, "--out", tmp_path / "p")
    assert code == 2 and "importance and random" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- plot


def test_plot_draws_as_mean_with_a_band(checkpoints, glue_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from headcount.plotting import plot_curves, read_curve_csv, save_curve_figure

    rows = curve(checkpoints["cls2"], glue_dir, order="random", draws=3,
                 ratios=[0.25, 0.5, 1.0])
    random_csv = write_curve_csv(tmp_path / "random.csv", rows)
    top_csv = write_curve_csv(tmp_path / "top.csv", curve(
        checkpoints["cls2"], glue_dir, order="top", ratios=[0.25, 0.5, 1.0]))
    figure, ax = plt.subplots()
    both = [{**row, "source": str(path)} for path in (random_csv, top_csv)
            for row in read_curve_csv(path)]
    plot_curves(both, ax)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["random order, mean ± std of 3 draws", "top order"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    mean_line = next(line for line in ax.get_lines() if line.get_label().startswith("random"))
    top_line = next(line for line in ax.get_lines() if line.get_label() == "top order")
    assert mean_line.get_color() != top_line.get_color()
    assert mean_line.get_marker() != top_line.get_marker()
    expected = []
    for ratio in (0.0, 0.25, 0.5, 1.0):
        values = [row["relative"] for row in rows if row["ratio_requested"] == ratio]
        expected.append(sum(values) / len(values))
    assert list(mean_line.get_ydata()) == pytest.approx(expected)
    assert list(mean_line.get_xdata()) == pytest.approx([0.0, 0.25, 0.5, 1.0])
    plt.close(figure)
    out = save_curve_figure([str(random_csv), str(top_csv)], tmp_path / "fig.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_order_scores_dtype_is_float():
    assert order_scores(head_order("random", 2, 2), 2, 2).dtype == torch.float32
