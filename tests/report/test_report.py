"""The report stage: figures, headline findings, report.md and report.html.

Small synthetic tables built by hand (2 seeds, 2 tasks, 2 normalisations, 6 ratios, a model
of 2 layers x 4 heads) whose headline numbers can be computed by hand.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from headcount.report.assemble import figure_curves, headline_findings, write_report

RATIOS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Mean relative performance over the two seeds (seed 0: +0.01, seed 1: -0.01):
# SST-2: l1 stays >= 0.9 up to 0.6, l2 up to 0.4; CoLA: l1 up to 0.4, l2 up to 0.2.
DOWNSTREAM = {
    ("SST-2", "l1"): (1.0, 0.97, 0.95, 0.92, 0.70, 0.40),
    ("SST-2", "l2"): (1.0, 0.95, 0.92, 0.80, 0.55, 0.40),
    ("CoLA", "l1"): (1.0, 0.96, 0.93, 0.85, 0.50, 0.20),
    ("CoLA", "l2"): (1.0, 0.93, 0.85, 0.70, 0.40, 0.20),
}
# Masked LM, recall@1: l1 >= 0.75 up to 0.4 and below from 0.6; l2 below from 0.4.
PRETRAIN = {"l1": (1.0, 0.90, 0.80, 0.70, 0.40, 0.10),
            "l2": (1.0, 0.85, 0.70, 0.50, 0.30, 0.10)}
METRICS = {"SST-2": "accuracy", "CoLA": "mcc", "mlm": "recall@1"}
# Recall reaches 0.9 at x = 0.7 (SST-2) and x = 0.8 (CoLA) with l1.
RECALL_REACHED = {("SST-2", "l1"): 0.7, ("CoLA", "l1"): 0.8, ("SST-2", "l2"): 0.6,
                  ("CoLA", "l2"): 0.9}
SEEDS = (0, 1)
OFFSET = {0: 0.01, 1: -0.01}
MODEL = "tiny-bert"


def synthetic_tables(model: str = MODEL, tasks=("SST-2", "CoLA"), layers: int = 2,
                     heads: int = 4) -> dict[str, list[dict]]:
    total = layers * heads
    curves = []
    for seed in SEEDS:
        for (task, normalize), values in DOWNSTREAM.items():
            if task not in tasks:
                continue
            for ratio, value in zip(RATIOS, values, strict=True):
                relative = value + (OFFSET[seed] if 0 < ratio else 0.0)
                pruned = round(ratio * total)
                curves.append(dict(
                    model=model, task=task, curve="downstream", rank_task=task,
                    normalize=normalize, schedule="iterative", seed=seed,
                    ratio_requested=ratio, ratio_pruned=ratio, heads_remaining=total - pruned,
                    metric=METRICS[task], value=0.8 * relative, relative=relative, main=True,
                    pruned_heads=" ".join(f"{i // heads}:{i % heads}" for i in range(pruned))))
                curves.append({**curves[-1], "metric": "loss", "value": 0.3, "relative": 5.0,
                               "main": False})
        for normalize, values in PRETRAIN.items():
            for ratio, value in zip(RATIOS, values, strict=True):
                relative = value + (OFFSET[seed] if 0 < ratio else 0.0)
                curves.append(dict(
                    model=model, task="mlm", curve="pretrain", rank_task="mlm",
                    normalize=normalize, schedule="iterative", seed=seed,
                    ratio_requested=ratio, ratio_pruned=ratio,
                    heads_remaining=total - round(ratio * total), metric="recall@1",
                    value=0.5 * relative, relative=relative, main=True, pruned_heads=""))
    recall = []
    for (task, normalize), reached in RECALL_REACHED.items():
        if task not in tasks:
            continue
        for i in range(11):
            x = i / 10
            mean = 0.95 if x >= reached - 1e-9 else 0.5 + 0.3 * x / reached
            recall.append(dict(model=model, task=task, normalize=normalize, x=x, threshold=0.9,
                               recall_mean=mean, recall_std=0.02, n=len(SEEDS),
                               per_seed=f"{mean + 0.02:.6g} {mean - 0.02:.6g}"))
    drift_layers, drift_heads, importance, correlation = [], [], [], []
    for seed in SEEDS:
        for t, task in enumerate(tasks):
            for layer in range(1, layers + 1):
                # mean over seeds: layer 1 -> 0.02, layer 2 -> 0.15 (+ 0.01 per task index)
                js_mean = {1: (0.01, 0.03), 2: (0.10, 0.20)}.get(layer, (0.2, 0.3))[seed] + 0.01 * t
                drift_layers.append(dict(model=model, task=task, seed=seed, layer=layer,
                                         js_mean=js_mean, js_max=2 * js_mean,
                                         l2=layer * (1.0 + seed)))
                for head in range(heads):
                    drift_heads.append(dict(model=model, task=task, seed=seed, layer=layer,
                                            head=head, js=js_mean * (0.5 + head / heads)))
            for kind, r in (("pretrain", (0.05, 0.07)), ("downstream", (-0.08, -0.04))):
                correlation.append(dict(
                    model=model, task=task, seed=seed, importance=kind, normalize="l1",
                    n=total, pearson_r=r[seed], pearson_p=0.5, spearman_rho=r[seed] / 2,
                    spearman_p=0.6, slope=0.1, intercept=0.05))
        for task in (*tasks, "mlm"):
            for layer in range(1, layers + 1):
                for head in range(heads):
                    raw = 0.1 + 0.05 * ((layer * 7 + head * 3 + seed) % 5)
                    importance.append(dict(model=model, task=task, seed=seed, layer=layer,
                                           head=head, raw=raw, l1=raw / 2, l2=raw / 1.5,
                                           none=raw))
    freezing, pruned_finetune, finetune = [], [], []
    relative_frozen = {"SST-2": (0.97, 0.99), "CoLA": (0.90, 0.92)}
    stages = {"unpruned": (1.0, 1.0), "pruned-before": (0.60, 0.64),
              "pruned-after": (0.96, 0.98)}
    for seed in SEEDS:
        for task in tasks:
            relative = relative_frozen.get(task, (0.95, 0.95))[seed]
            freezing.append(dict(model=model, task=task, seed=seed, freeze_layers=1,
                                 metric=METRICS.get(task, "accuracy"), value=0.8 * relative,
                                 full_value=0.8, relative=relative))
            for stage, values in stages.items():
                pruned_finetune.append(dict(model=model, task=task, seed=seed, ratio=0.5,
                                            stage=stage, metric=METRICS.get(task, "accuracy"),
                                            value=0.8 * values[seed], relative=values[seed]))
            for kind, frozen in (("full", 0), ("frozen", 1), ("pruned-before", 0)):
                finetune.append(dict(model=model, task=task, seed=seed, kind=kind,
                                     freeze_layers=frozen, metric=METRICS.get(task, "accuracy"),
                                     value=0.8, main=True, steps=100, seconds=12.5,
                                     examples_per_second=256.0))
    return dict(finetune=finetune, importance=importance, curves=curves, recall=recall,
                drift_heads=drift_heads, drift_layers=drift_layers, correlation=correlation,
                freezing=freezing, pruned_finetune=pruned_finetune)


META = {
    "name": "synthetic",
    "config_text": '[study]\nname = "synthetic"\nseeds = [0, 1]\n',
    "environment": {"versions": {"torch": "2.13.0", "transformers": "5.1.0"}, "git": None,
                    "device": "cpu", "python": "3.11.7", "platform": "Linux",
                    "started": "2026-05-01T10:00:00", "finished": "2026-05-01T11:02:03"},
    "notes": ["tiny-bert has no MLM head: one was fitted on the frozen encoder"],
}

ALL_SECTIONS = ("curves-downstream", "curves-pretrain", "recall", "drift", "correlation",
                "freezing", "pruned-finetune", "finetune", "configuration", "environment",
                "notes", "tables")


class _Collector(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col"}

    def __init__(self):
        super().__init__()
        self.images, self.links, self.ids, self.stack, self.errors = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "tables").mkdir()
    (run_dir / "tables" / "curves.csv").write_text("model\n")
    paths = write_report(run_dir, synthetic_tables(), META)
    return run_dir, paths


def test_files_and_figures(report):
    run_dir, paths = report
    assert paths["html"] == run_dir / "report.html" and paths["html"].is_file()
    assert paths["markdown"] == run_dir / "report.md" and paths["markdown"].is_file()
    stems = {path.with_suffix("").name for path in paths["figures"]}
    assert stems == {f"{kind}-{MODEL}" for kind in (
        "curves-downstream", "curves-pretrain", "recall", "drift", "correlation", "freezing",
        "pruned-finetune")}
    for stem in stems:
        png, svg = run_dir / "figures" / f"{stem}.png", run_dir / "figures" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in svg.read_text()[:2000]
    assert not list((run_dir / "figures").glob(".*")), "staging files left behind"


def test_html_is_well_formed_and_references_existing_files(report):
    run_dir, paths = report
    text = paths["html"].read_text()
    parsed = _parse(text)
    assert not parsed.errors and parsed.stack == [], (parsed.errors, parsed.stack)
    assert len(parsed.images) == 7
    for src in parsed.images + [link for link in parsed.links if not link.startswith("#")]:
        assert not src.startswith(("/", "http")), src
        assert (run_dir / src).is_file(), src
    for src in parsed.images:  # both formats exist for every figure
        stem = src.rsplit(".", 1)[0]
        assert (run_dir / f"{stem}.png").is_file() and (run_dir / f"{stem}.svg").is_file()
    assert set(ALL_SECTIONS) <= set(parsed.ids)
    for anchor in (link[1:] for link in parsed.links if link.startswith("#")):
        assert anchor in parsed.ids
    assert "<style>" in text and "<script" not in text
    assert "tables/curves.csv" in parsed.links  # existing full table linked
    assert "tables/recall.csv" not in parsed.links  # missing file not linked


def test_markdown_references_existing_figures(report):
    run_dir, paths = report
    text = paths["markdown"].read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 7
    for image in images:
        assert (run_dir / image).is_file()
        assert (run_dir / image).with_suffix(".svg").is_file()
    assert text.startswith("# headcount study: synthetic")
    assert "```toml\n[study]" in text
    assert "1 h 02 min 03 s" in text
    assert "fitted on the frozen encoder" in text
    # Compact tables: the per-ratio table has one row per ratio, not one per raw row.
    assert "| 0.60 | 0.920 | 0.800 | 0.850 | 0.700 |" in text


def test_headline_findings_numbers():
    findings = headline_findings(synthetic_tables())

    def find(prefix: str) -> str:
        matches = [f for f in findings if f.startswith(prefix)]
        assert len(matches) == 1, (prefix, findings)
        return matches[0]

    sst2 = find(f"{MODEL}, SST-2: the mean relative")
    assert "over 2 seeds" in sst2 and "≥ 90%" in sst2
    assert "up to 60% of heads pruned with l1 normalisation" in sst2
    assert "up to 40% pruned with l2 normalisation" in sst2
    assert "l1 prunes furthest" in sst2
    cola = find(f"{MODEL}, CoLA: the mean relative")
    assert "up to 40% of heads pruned with l1" in cola and "up to 20% pruned with l2" in cola
    summary = find(f"{MODEL}, all 2 tasks (l1)")
    assert "up to 40% of heads pruned" in summary and "CoLA" in summary
    mlm_l1 = find(f"{MODEL}, masked LM, l1")
    assert "falls below 75% at 60% of heads pruned" in mlm_l1 and "up to 40%" in mlm_l1
    assert "60% of the heads keep 75%" in mlm_l1
    assert "falls below 75% at 40%" in find(f"{MODEL}, masked LM, l2")
    recall = find(f"{MODEL}: recall")
    assert "l1, mean over 2 seeds" in recall
    assert "70% for SST-2" in recall and "80% for CoLA" in recall
    assert "by x = 80%" in recall
    drift = find(f"{MODEL}, SST-2: attention")
    assert "least in the lowest layers" in drift
    assert "0.02 over layer 1 vs 0.15 over layer 2" in drift
    correlation = find(f"{MODEL}, SST-2: correlation")
    assert "pretrain importance: Pearson r = 0.06" in correlation
    assert "downstream importance: Pearson r = -0.06" in correlation
    peak = find(f"{MODEL}: the largest |r|")
    assert "is 0.08, within the paper's |r| ≤ 0.10" in peak
    freezing = find(f"{MODEL} fine-tuned with 1 frozen layer reaches")
    assert "0.98 on SST-2 (accuracy)" in freezing and "0.91 on CoLA (mcc)" in freezing
    pruned = find(f"{MODEL}, SST-2, 50% of heads pruned")
    assert "unpruned 1.00, pruned 0.62, pruned and fine-tuned again 0.97" in pruned


def test_findings_are_left_out_without_tables():
    assert headline_findings({}) == []
    tables = synthetic_tables()
    only_recall = headline_findings({"recall": tables["recall"]})
    assert len(only_recall) == 1 and "recall" in only_recall[0]


def test_sections_omitted_for_missing_tables(tmp_path):
    tables = synthetic_tables()
    kept = {"curves": tables["curves"], "recall": [], "freezing": None}
    paths = write_report(tmp_path, kept, {"name": "partial"})
    parsed = _parse(paths["html"].read_text())
    assert {"curves-downstream", "curves-pretrain"} <= set(parsed.ids)
    for absent in ("recall", "drift", "correlation", "freezing", "pruned-finetune",
                   "finetune", "configuration", "environment", "notes"):
        assert absent not in parsed.ids
    assert {p.with_suffix("").name for p in paths["figures"]} == {
        f"curves-downstream-{MODEL}", f"curves-pretrain-{MODEL}"}
    markdown = paths["markdown"].read_text()
    assert "Recall of downstream" not in markdown and "Configuration" not in markdown
    # Only pre-train curves: no Figure 1.
    only_mlm = [row for row in tables["curves"] if row["curve"] == "pretrain"]
    assert figure_curves(only_mlm, MODEL, "downstream") is None
    empty = write_report(tmp_path / "empty", {}, {})
    assert empty["figures"] == [] and "No findings" in empty["html"].read_text()


def test_text_is_escaped(tmp_path):
    tables = synthetic_tables(model="org/<m&m>", tasks=("SST-2<b>", "CoLA"))
    del tables["importance"]  # (no Figure 6: faster; its table is still reported)
    meta = {**META, "name": "<script>x</script>", "notes": ["a < b & c"],
            "config_text": 'name = "<i>"\n'}
    paths = write_report(tmp_path, tables, meta)
    text = paths["html"].read_text()
    assert "<b>" not in text and "<script>" not in text and "<i>" not in text
    assert "<m&m>" not in text
    assert "SST-2&lt;b&gt;" in text and "a &lt; b &amp; c" in text
    assert "org/&lt;m&amp;m&gt;" in text
    parsed = _parse(text)
    assert not parsed.errors
    for src in parsed.images:
        assert (tmp_path / src).is_file()
    assert all("/" not in Path(p).name and "<" not in p.name for p in paths["figures"])
    markdown = paths["markdown"].read_text()
    assert "SST-2&lt;b>" in markdown and "<b>" not in markdown


def test_check_report_without_chromium(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"
    spec = importlib.util.spec_from_file_location("check_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = tmp_path / "report.html"
    page.write_text("<!DOCTYPE html><p>x</p>")
    status = module.main([str(page), "--out", str(tmp_path / "shot.png"),
                          "--chromium", "no-such-chromium-binary"])
    assert status == 2
    assert "Chromium not found" in capsys.readouterr().err
    assert module.main([str(tmp_path / "missing.html"), "--out", str(tmp_path / "s.png")]) == 2


def test_malformed_rows_do_not_cost_the_report(tmp_path):
    import warnings

    tables = synthetic_tables()
    tables["curves"] = tables["curves"] + [
        {"model": MODEL, "task": "SST-2", "relative": "n/a", "ratio_pruned": None},
        {"model": MODEL, "task": float("nan"), "curve": "downstream", "relative": 0.5,
         "ratio_pruned": 0.5, "main": "True"}]
    tables["correlation"] = [{**row, "intercept": None, "pearson_r": float("nan")}
                             for row in tables["correlation"]]
    tables["drift_layers"] = tables["drift_layers"] + [{"model": MODEL}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_report(tmp_path, tables, META)
    assert not [str(w.message) for w in caught if "left out" in str(w.message)]
    assert len(paths["figures"]) == 14 and paths["html"].is_file()


def test_a_failing_figure_is_noted_not_fatal(tmp_path, monkeypatch):
    import headcount.report.sections as report_module  # the drift section's home

    def broken(rows, model):
        raise ValueError("boom")

    monkeypatch.setattr(report_module, "figure_drift", broken)
    tables = {"drift_layers": synthetic_tables()["drift_layers"]}
    with pytest.warns(UserWarning, match="figure drift-tiny-bert left out: ValueError: boom"):
        paths = write_report(tmp_path, tables, META)
    text = paths["html"].read_text()
    assert paths["figures"] == [] and "Report warnings" in text and 'id="drift"' in text
    assert "0.15" in text  # the table behind the figure is still there
