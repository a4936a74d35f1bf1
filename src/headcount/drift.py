"""Attention drift and feature drift between a pre-trained and a fine-tuned model.

Both models read the same inputs (section 5 and Figure 4 of the reference study):

- **Attention drift** of head h in layer application l: the Jensen–Shannon divergence, with
  log base 2 (so it lies in [0, 1]), between the two models' attention distributions of each
  real (non-padding) query token over the real key positions,

      JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M),   M = ½ (P + Q),   0 · log 0 = 0,

  averaged over the real query tokens of each example, then over examples. Per layer: the
  mean and the max over heads.
- **Feature drift** of layer l: the L2 distance ‖h_pre − h_ft‖₂ between the hidden states
  after layer l, per real token, averaged over the tokens of each example, then over
  examples. The same distance for the input of the first layer (the embeddings output;
  ALBERT: the embeddings projected to the hidden size) is reported separately.

Special tokens ([CLS], [SEP], <s>, ...) are real tokens; only padding is excluded, on both
the query and the key side. Attention probabilities exist only under the eager attention
implementation: load both models with `attn_implementation="eager"`. They are read with
forward hooks on each attention module (the one `arch.attention_blocks` names), so ALBERT's
one shared layer gives one row per layer application, and a physically pruned layer whose
every head was removed gives a row of nulls (transformers' own `output_attentions` tuple
skips such a layer). Heads are indexed by their original position; removed heads are
null (NaN in tensors).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from headcount.arch import encoder_of
from headcount.attention import per_example_mean, recording_attention, restricted_to_real_keys
from headcount.backoff import BatchBackoff
from headcount.errors import HeadcountError, UnsupportedModelError
from headcount.forward import batches_on_device, eval_mode, model_device, model_inputs
from headcount.layouts import HeadLayout, architecture_signature, head_layout

AVERAGING = (
    "js: per head, the Jensen-Shannon divergence (log base 2, in [0, 1]) between the two "
    "models' attention distributions of each real (non-padding) query token over the real "
    "key positions (restricted and renormalised), averaged over the real query tokens of "
    "each example, then over examples; js_layer_mean/js_layer_max: mean/max over the heads "
    "of a layer. l2: per layer, the L2 distance between the two models' hidden states after "
    "that layer, per real token, averaged over the tokens of each example, then over "
    "examples; l2_embeddings: the same for the input of the first layer (embeddings output)."
)


@dataclass(frozen=True)
class Drift:
    """Attention and feature drift, averaged over real tokens of each example, then examples.

    `js` is `[layer applications, heads]` (float64; NaN for physically removed heads),
    `l2` is `[layer applications]`, `l2_embeddings` the distance of the first layer's input.
    """

    js: torch.Tensor
    l2: torch.Tensor
    l2_embeddings: float
    num_examples: int
    shared: bool
    final_batch_size: int | None = None  # after out-of-memory back-off (headcount.backoff)

    def js_layer_mean(self) -> list[float | None]:
        """Mean JS over the heads present in each layer (None for a layer with none)."""
        return [none_if_nan(row[~row.isnan()].mean()) for row in self.js]

    def js_layer_max(self) -> list[float | None]:
        """Max JS over the heads present in each layer (None for a layer with none)."""
        return [none_if_nan(row[~row.isnan()].max()) if (~row.isnan()).any() else None
                for row in self.js]


def none_if_nan(value: torch.Tensor | float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def js_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Jensen–Shannon divergence (log base 2, in [0, 1]) between distributions along `dim`.

    JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M) with M = ½ (P + Q) and 0 · log 0 = 0. No epsilon is
    added: identical inputs give exactly 0, disjoint supports exactly 1 (up to rounding).

    Example:
        >>> js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor(1.)
    """
    m = (p + q) / 2

    def kl_to_m(x: torch.Tensor) -> torch.Tensor:
        # x > 0 implies m > 0; where x == 0 the term is 0 whatever m is.
        safe_m = torch.where(x > 0, m, torch.ones_like(m))
        return torch.xlogy(x, x / safe_m).sum(dim)

    return (kl_to_m(p) + kl_to_m(q)) / (2 * math.log(2))


def _shape(model: nn.Module) -> tuple[HeadLayout, dict]:
    return head_layout(model), architecture_signature(model)


def check_same_shape(
    pretrained: nn.Module, finetuned: nn.Module, names: tuple[str, str] = ("pretrained",
                                                                          "finetuned"),
) -> HeadLayout:
    """The shared head layout of two models, or a HeadcountError naming what differs:
    family, layer applications, heads per layer, hidden size or the heads kept by pruning."""
    (layout_a, sig_a), (layout_b, sig_b) = _shape(pretrained), _shape(finetuned)
    differences = []
    for label, a, b in (
        ("family", sig_a["family"], sig_b["family"]),
        ("layers", layout_a.num_layers, layout_b.num_layers),
        ("heads per layer", layout_a.num_heads, layout_b.num_heads),
        ("hidden size", sig_a["hidden_size"], sig_b["hidden_size"]),
    ):
        if a != b:
            differences.append(f"{label} {a} vs {b}")
    if not differences and layout_a.kept != layout_b.kept:
        rows = [i for i, (a, b) in enumerate(zip(layout_a.kept, layout_b.kept, strict=True))
                if a != b]
        differences.append(
            f"heads kept (pruned differently) in layer(s) {', '.join(map(str, rows[:5]))}"
            f"{', ...' if len(rows) > 5 else ''}"
        )
    if differences:
        raise HeadcountError(
            f"cannot compare models of different shapes: {'; '.join(differences)} "
            f"({names[0]} vs {names[1]})"
        )
    return layout_a


def _run(model: nn.Module, batch: dict[str, torch.Tensor], layout: HeadLayout, name: str):
    """(attention per layer application, hidden states [input of layer 0, after each layer])."""
    device = model_device(model)
    inputs = {key: value.to(device) for key, value in model_inputs(batch).items()}
    with recording_attention(model) as attentions:
        output = encoder_of(model)(**inputs, output_hidden_states=True, return_dict=True)
    hidden = output.hidden_states
    if len(attentions) != layout.num_layers or hidden is None \
            or len(hidden) != layout.num_layers + 1:
        raise RuntimeError(
            f"{name}: expected {layout.num_layers} attention applications and "
            f"{layout.num_layers + 1} hidden states, got {len(attentions)} and "
            f"{None if hidden is None else len(hidden)}"
        )
    for layer, weights in enumerate(attentions):
        if weights is None and layout.kept_in_application(layer):
            raise UnsupportedModelError(
                f"{name} returned no attention probabilities (layer {layer}): load it with "
                "attn_implementation='eager'; SDPA and flash attention do not compute them"
            )
    return attentions, hidden


@dataclass(frozen=True)
class _Pair:
    """The two models compared, their shared head layout and their names."""

    pretrained: nn.Module
    finetuned: nn.Module
    layout: HeadLayout
    names: tuple[str, str]


def _drift_sums(pair: _Pair, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One batch's (JS sums `[layers, heads]`, L2 sums `[layers + 1]`, examples), float64."""
    layout = pair.layout
    device = model_device(pair.pretrained)
    js_sums = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64,
                          device=device)
    l2_sums = torch.zeros(layout.num_layers + 1, dtype=torch.float64, device=device)
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    real = (torch.ones_like(ids) if mask is None else mask).to(torch.float64)
    attention_a, hidden_a = _run(pair.pretrained, batch, layout, pair.names[0])
    attention_b, hidden_b = _run(pair.finetuned, batch, layout, pair.names[1])
    for layer in range(layout.num_layers):
        kept = list(layout.kept_in_application(layer))
        if not kept:
            continue
        p = restricted_to_real_keys(attention_a[layer], real)
        q = restricted_to_real_keys(attention_b[layer].to(device), real)
        if p.shape != q.shape or p.shape[1] != len(kept):
            raise RuntimeError(f"layer {layer}: attention shapes {tuple(p.shape)} and "
                               f"{tuple(q.shape)} for {len(kept)} heads")
        per_query = js_divergence(p, q)  # [batch, heads present, queries]
        js_sums[layer, kept] += per_example_mean(per_query, real).sum(dim=0)
    for index, (a, b) in enumerate(zip(hidden_a, hidden_b, strict=True)):
        distance = (a.to(torch.float64) - b.to(device, torch.float64)).norm(dim=-1)
        l2_sums[index] += per_example_mean(distance, real).sum()
    return js_sums, l2_sums, ids.shape[0]


@torch.inference_mode()
def attention_drift(
    pretrained: nn.Module,
    finetuned: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    names: tuple[str, str] = ("pretrained", "finetuned"),
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> Drift:
    """JS divergence of every head's attention and L2 distance of every layer's hidden
    states between two models of the same shape, on the same `batches`.

    Both models may carry any task head (only their encoders run) and must use the eager
    attention implementation. Each quantity is averaged over the real (non-padding) tokens
    of each example, then over examples; sums are kept in float64. Padding never changes
    the result: padded queries are not averaged and padded keys are dropped from every
    distribution (which is renormalised over the real keys). A batch that runs out of
    memory is run again in halves (`headcount.backoff`).

    Example:
        >>> drift = attention_drift(pre, fine, data.batches(32))
        >>> drift.js.shape, drift.l2.shape
        (torch.Size([12, 12]), torch.Size([12]))
    """
    layout = check_same_shape(pretrained, finetuned, names)
    layers, heads = layout.num_layers, layout.num_heads
    device = next(pretrained.parameters()).device
    backoff = backoff or BatchBackoff()
    step = partial(_drift_sums, _Pair(pretrained, finetuned, layout, names))
    js_sums = torch.zeros(layers, heads, dtype=torch.float64, device=device)
    l2_sums = torch.zeros(layers + 1, dtype=torch.float64, device=device)
    count = 0
    with eval_mode(pretrained), eval_mode(finetuned):
        for batch in batches_on_device(batches, device, desc="drift", progress=progress,
                                       total=total):
            batch_js, batch_l2, size = backoff.run(step, batch)
            js_sums += batch_js
            l2_sums += batch_l2
            count += size
    if count == 0:
        raise HeadcountError("no examples to compare")
    js = (js_sums / count).cpu()
    for layer in range(layers):
        missing = sorted(set(range(heads)) - set(layout.kept_in_application(layer)))
        js[layer, missing] = float("nan")
    l2 = (l2_sums / count).cpu()
    return Drift(js=js, l2=l2[1:], l2_embeddings=float(l2[0]), num_examples=count,
                 shared=layout.shared_layers, final_batch_size=backoff.final_size)


def check_same_vocabulary(tokenizer_a, tokenizer_b, names: tuple[str, str]) -> None:
    """Refuse tokenizers of different sizes (the models would read different token ids);
    warn when the sizes agree but the vocabularies do not."""
    size_a, size_b = len(tokenizer_a), len(tokenizer_b)
    if size_a != size_b:
        raise HeadcountError(
            f"the tokenizers differ: {names[0]} has {size_a} tokens, {names[1]} has {size_b}; "
            "both models must read the same token ids"
        )
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        warnings.warn(
            f"the tokenizers of {names[0]} and {names[1]} have the same size but different "
            f"vocabularies; inputs are tokenised with {names[0]}'s",
            stacklevel=3,
        )


DRIFT_KEYS = ("js", "js_layer_mean", "js_layer_max", "l2", "l2_embeddings", "layers", "heads",
              "task")


