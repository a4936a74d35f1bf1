"""Fine-tuning after pruning, a unit of the reference study (heads pruned by importance)
and of the companion study of pruning orders (Budhraja et al.: random and layer-location
orders, and how the remaining heads' importance compensates).

The fine-tuned model loses `ratio` of its heads in an order, is scored, fine-tuned again and
scored again. Seeds: the order of a (study seed s, draw d) is drawn with seed 1000·s + d, so
that draws of different study seeds never repeat each other.
"""

from __future__ import annotations

from functools import partial

import torch

from headcount.importance import normalize
from headcount.study.units import (
    TunedModel,
    UnitContext,
    evaluation_unit,
    importance_options,
    ratio_text,
    task_options,
    train_options,
    training_config,
)

SEED_STRIDE = 1000


def order_seed(seed: int, draw: int) -> int:
    return SEED_STRIDE * seed + draw


def pruned_heads_for(order: str, scores: dict, count: int, method: str, seed: int):
    """The first `count` heads of `order` on a model with the scores' head grid."""
    from headcount.orders import head_order
    from headcount.pruning import least_important_first, take_heads

    raw = torch.tensor(scores["raw_scores"])
    layers, heads = raw.shape
    if order == "importance":
        candidates = least_important_first(normalize(raw, method))
    else:
        candidates = head_order(order, layers, heads, seed)
    return take_heads(candidates, count, {layer: heads for layer in range(layers)}, False)


def pruned_finetune_unit(ctx: UnitContext, tuned: TunedModel, order: str,
                         ratio: float) -> dict:
    """`pruned_finetune_result`, saved as a unit of the run."""
    label = (f"{ctx.model.name} {ctx.task_name}: {ratio_text(ratio)} of heads pruned in "
             f"{order} order, fine-tuned again (seed {ctx.seed})")
    output = ctx.output("pruned", order, f"ratio-{ratio_text(ratio)}")
    return evaluation_unit(ctx.run, label, output,
                           partial(pruned_finetune_result, ctx, tuned, order, ratio))


def pruned_finetune_result(ctx: UnitContext, tuned: TunedModel, order: str,
                           ratio: float) -> dict:
    """The fine-tuned model with `ratio` of its heads removed in `order` (importance: least
    important first by the study's first normalisation), scored before and after fine-tuning
    it again; with the importance of the remaining heads before and after (compensation)."""
    from headcount.compensation import compensation_record
    from headcount.jobs.prepared import prepare_for, prepare_task
    from headcount.jobs.train import train_and_score
    from headcount.layouts import head_layout
    from headcount.removal import remove_heads

    config = ctx.config
    method = config.importance.normalizations[0]
    options = train_options(ctx)
    # Scored on all of the evaluation split, in batches of the fine-tuning's size.
    dev = task_options(ctx.task, split=ctx.task.eval_split, seed=ctx.seed,
                       max_length=options.max_length, batch_size=options.batch_size)
    prepared = prepare_task(tuned.checkpoint, dev, device=config.device)
    count = round(ratio * torch.tensor(tuned.scores["raw_scores"]).numel())
    chosen = pruned_heads_for(order, tuned.scores, count, method, order_seed(ctx.seed, 0))
    remove_heads(prepared.model, chosen)
    before = prepared.evaluate()
    compensation = config.orders.compensation
    if compensation:
        imp_options = importance_options(ctx)
        imp_data = prepare_for(prepared.loaded, prepared.task, imp_options)
        importance_before = _importance(prepared.model, imp_data, imp_options)
    after = train_and_score(prepared.loaded, prepared.task, options, training_config(ctx),
                            eval_split=ctx.task.eval_split)
    result = {"order": order, "ratio": ratio, "normalize": method, "order_seed":
              order_seed(ctx.seed, 0), "heads_removed": len(chosen),
              "removed": [list(head) for head in chosen],
              "before": {"metrics": before.metrics, "main_metric": before.main},
              "after": {"metrics": after["metrics"], "main_metric": after["main_metric"]}}
    if compensation:
        result["compensation"] = compensation_record(
            importance_before, _importance(prepared.model, imp_data, imp_options),
            head_layout(prepared.model).kept)
    return result


def _importance(model, data, options) -> torch.Tensor:
    """Raw importance of the heads `model` still has (a removed head scores 0)."""
    from headcount.importance import head_importance

    return head_importance(model, data.batches(options.batch_size), data.kind).raw
