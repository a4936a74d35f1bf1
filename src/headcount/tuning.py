"""Mask tuning (Kwon et al. 2022): least-squares scales of the kept heads and neurons so that
each pruned layer reconstructs the unpruned model's layer, bottom up; then folded into the
weights.

Layer l of the pruned model ("student", lower layers already tuned) is compared with layer l
of the unpruned model ("teacher") on the calibration examples' real tokens. For the
attention sublayer the target is the teacher's sum before its LayerNorm minus the
student's residual: B = W_o·ctx_T + x_T − x_S (the output bias cancels), and head h of the
student contributes A_h = ctx_S,h·W_o,hᵀ; the scales s minimise ‖Σ_h s_h A_h − B‖². The
feed-forward sublayer is solved the same way, after the attention scales are in place, with
the residual stream it adds to (the intermediate projection's input in post-LayerNorm layers;
in pre-LayerNorm ones, ModernBERT's or XLM-RoBERTa-XL's, the stream before the norm:
`Family.ffn_residual`) and one scale per kept neuron (for the last layer of a
classification model, on the first token only: the classifier reads nothing else). Scales
are the gate values (`headcount.gates`), so a tuned model is the masked model with those
gates; `fold_scales` multiplies them into the output projections, and the pruned units are
then removed as usual.

To keep the cost linear in depth, each layer runs on cached inputs: the encoder's call of
every layer (its positional and keyword arguments) is recorded once per batch, and layer
l + 1 is fed the outputs of layer l. Per layer the teacher's layer runs once and the
student's three times (for the attention sums, the feed-forward sums, and its output).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn

from headcount.arch import attention_blocks, distinct_layers, family_of, feed_forwards
from headcount.forward import batches_on_device, eval_mode, model_device, model_inputs
from headcount.gates import gate_units, gated
from headcount.layouts import head_layout, neuron_layout
from headcount.resize import module_at

MAX_SCALE = 10.0  # larger least-squares scales mean an ill-posed layer: it is left at 1


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what is needed was recorded."""


@dataclass
class _Call:
    """One batch's call of a layer: positional args (hidden states first) and keywords."""

    args: tuple
    kwargs: dict
    real: torch.Tensor  # [batch, seq] bool: real (non-padding) tokens


@dataclass
class TuningReport:
    """Per layer: the relative reconstruction errors ‖As − B‖²/‖B‖² of each sublayer with
    the 0/1 mask (before) and with the tuned scales (after), and layers left at 1."""

    attention_before: list[float] = field(default_factory=list)
    attention_after: list[float] = field(default_factory=list)
    ffn_before: list[float] = field(default_factory=list)
    ffn_after: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _record_calls(model: nn.Module, batches: list[dict]) -> list[list[_Call]]:
    """Per batch, the call of every layer during a plain forward pass (inputs of layer 0 are
    real; the others are replaced while tuning)."""
    layers = distinct_layers(model)
    calls: list[list[_Call]] = []
    for batch in batches:
        current: list[_Call] = []
        real = batch["attention_mask"].bool() if "attention_mask" in batch else \
            torch.ones_like(batch["input_ids"], dtype=torch.bool)

        def hook(module, args, kwargs, current=current, real=real):
            current.append(_Call(args, dict(kwargs), real))

        handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
        try:
            with torch.no_grad():
                model.base_model(**model_inputs(batch))
        finally:
            for handle in handles:
                handle.remove()
        calls.append(current)
    return calls


def _hidden(call: _Call) -> torch.Tensor:
    return call.args[0] if call.args else call.kwargs["hidden_states"]


def _with_hidden(call: _Call, hidden: torch.Tensor) -> _Call:
    if call.args:
        return _Call((hidden, *call.args[1:]), call.kwargs, call.real)
    return _Call((), {**call.kwargs, "hidden_states": hidden}, call.real)


def _run(layer: nn.Module, call: _Call) -> torch.Tensor:
    output = layer(*call.args, **call.kwargs)
    return output[0] if isinstance(output, (tuple, list)) else output


class InputRecorder:
    """Pre-hooks that record an input (the argument at a position) of modules of one layer
    while it runs."""

    def __init__(self, modules: dict[str, tuple[nn.Module, int]]):
        self.seen: dict[str, torch.Tensor] = {}
        self.handles = [module.register_forward_pre_hook(self._hook(name, position),
                                                         with_kwargs=True)
                        for name, (module, position) in modules.items()]

    def _hook(self, name, position):
        def hook(module, args, kwargs):
            if len(args) > position:
                self.seen[name] = args[position]
            else:  # passed by keyword: the parameter at that position
                parameter = list(inspect.signature(module.forward).parameters)[position]
                self.seen[name] = kwargs[parameter]
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def recorded_inputs(model: nn.Module, index: int) -> dict[str, tuple[nn.Module, int]]:
    """What tuning layer `index` records: the attention output projection's input (the
    heads' context), the feed-forward's residual stream (the intermediate projection's
    input in post-LayerNorm layers, else where the family says) and the feed-forward output
    projection's input (the neurons' activations)."""
    attention, ffn = attention_blocks(model)[index], feed_forwards(model)[index]
    residual = family_of(model.config).ffn_residual
    where = (ffn.intermediate, 0) if residual is None else \
        (module_at(distinct_layers(model)[index], residual[0]), residual[1])
    return {"context": (attention.output, 0), "residual": where,
            "activation": (ffn.output, 0)}


def _solve(ata: torch.Tensor, atb: torch.Tensor) -> torch.Tensor | None:
    """Least-squares scales from the normal equations (a tiny ridge for rank deficiency);
    None when they are not finite or not within ±MAX_SCALE."""
    ridge = 1e-9 * float(torch.diagonal(ata).mean().clamp(min=1e-30))
    eye = torch.eye(ata.shape[0], dtype=ata.dtype)
    try:
        scales = torch.linalg.solve(ata + ridge * eye, atb)
    except RuntimeError:
        return None
    if not torch.isfinite(scales).all() or float(scales.abs().max()) > MAX_SCALE:
        return None
    return scales


def _relative_error(ata, atb, btb, scales) -> float:
    """‖As − B‖² / ‖B‖² from the normal equations' sums."""
    residual = float(scales @ ata @ scales - 2 * scales @ atb + btb)
    return max(residual, 0.0) / max(btb, 1e-30)


def _gated(model: nn.Module, heads: torch.Tensor, neurons: torch.Tensor) -> ExitStack:
    stack = ExitStack()
    stack.enter_context(gate_units(gated(model, "heads"), heads))
    stack.enter_context(gate_units(gated(model, "neurons"), neurons))
    return stack


class _Sums:
    """The normal equations of one sublayer, accumulated over batches in float64."""

    def __init__(self, size: int):
        self.ata = torch.zeros(size, size, dtype=torch.float64)
        self.atb = torch.zeros(size, dtype=torch.float64)
        self.btb = 0.0

    def add(self, ata: torch.Tensor, atb: torch.Tensor, target: torch.Tensor) -> None:
        self.ata += ata.to("cpu", torch.float64)
        self.atb += atb.to("cpu", torch.float64)
        self.btb += float(target.to(torch.float64).pow(2).sum())


def _projection_part(linear: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    """What `linear` adds to the residual stream from `inputs`, bias left out."""
    return inputs @ linear.weight.t()


@dataclass
class _Layer:
    """What tuning layer `index` needs: its module, projections and present units."""

    index: int
    module: nn.Module
    output: nn.Linear       # attention output projection
    ffn_output: nn.Linear
    heads: tuple[int, ...]  # original indices of the heads present, in weight order
    head_dim: int
    first_token_only: bool  # the feed-forward of a classifier's last layer


@torch.no_grad()
def _attention_sums(layer: _Layer, teacher: dict, student: dict, real, kept_positions,
                    sums: _Sums) -> None:
    context = student["context"][real]  # [tokens, present heads * d_head]
    target = (_projection_part(layer.output, teacher["context"][real]) + teacher["x"][real]
              - student["x"][real])  # [tokens, hidden]
    d = layer.head_dim
    weight = layer.output.weight  # [hidden, present heads * d_head]
    parts = torch.stack([context[:, p * d:(p + 1) * d] @ weight[:, p * d:(p + 1) * d].t()
                         for p in kept_positions])  # [kept, tokens, hidden]
    flat = parts.reshape(len(kept_positions), -1).float()
    sums.add(flat @ flat.t(), flat @ target.reshape(-1).float(), target)


@torch.no_grad()
def _ffn_sums(layer: _Layer, teacher_part: torch.Tensor, student: dict, rows,
              kept: list[int], sums: _Sums) -> None:
    """The feed-forward normal equations' parts: ATA = (HᵀH) ∘ (WᵀW) with H the kept
    activations and W their output columns; `sums.ata` holds HᵀH here (the weight Gram,
    the same for every batch, multiplies it once at the end, in `_tune_ffn`)."""
    activation = student["activation"][rows][:, kept].float()  # [tokens, kept]
    weight = layer.ffn_output.weight[:, kept].float()  # [hidden, kept]
    target = (teacher_part - student["residual"][rows]).float()
    atb = ((target @ weight) * activation).sum(dim=0)
    sums.add(activation.t() @ activation, atb, target)


def _run_recorded(layer: _Layer, call: _Call, modules: dict,
                  gates=None) -> tuple[dict, torch.Tensor]:
    """Run the layer on `call` (under `gates` when given); its recorded inputs and output."""
    inputs = InputRecorder(modules)
    try:
        with torch.no_grad(), (gates if gates is not None else ExitStack()):
            output = _run(layer.module, call)
    finally:
        inputs.close()
    return {**inputs.seen, "x": _hidden(call)}, output


def _kept_positions(layer: _Layer, mask_row: torch.Tensor) -> tuple[list[int], list[int]]:
    """(positions in the weights, original indices) of the heads kept by a 0/1 mask row."""
    positions = [p for p, head in enumerate(layer.heads) if float(mask_row[head]) != 0]
    return positions, [layer.heads[p] for p in positions]


def _tune_attention(model, layer: _Layer, state: dict, report: TuningReport) -> None:
    heads, neurons = state["heads"], state["neurons"]
    positions, kept = _kept_positions(layer, heads[layer.index])
    modules = recorded_inputs(model, layer.index)
    sums, next_teacher, ffn_targets = _Sums(len(positions)), [], []
    for call_t, call_s in zip(state["teacher"], state["student"], strict=True):
        teacher, out = _run_recorded(layer, call_t, modules)
        next_teacher.append(out)
        # the teacher's feed-forward sum before its LayerNorm (bias left out), kept for
        # `_tune_ffn` so that the teacher's layer runs once
        rows = _ffn_rows(layer, call_t.real)
        with torch.no_grad():
            ffn_targets.append(_projection_part(layer.ffn_output, teacher["activation"][rows])
                               + teacher["residual"][rows])
        if positions:
            student, _ = _run_recorded(layer, call_s, modules, _gated(model, heads, neurons))
            _attention_sums(layer, teacher, student, call_s.real, positions, sums)
    state["next_teacher"], state["ffn_targets"] = next_teacher, ffn_targets
    if not positions:
        return
    scales = _scales(sums, f"attention of layer {layer.index}", report.attention_before,
                     report.attention_after, report.skipped)
    heads[layer.index, kept] = scales.to(heads.dtype)


def _scales(sums: _Sums, what: str, before: list, after: list, skipped: list) -> torch.Tensor:
    """The sublayer's least-squares scales (1 where they are ill-posed, noted in `skipped`),
    with its reconstruction error at the 0/1 mask and at the scales."""
    ones = torch.ones(sums.atb.shape[0], dtype=torch.float64)
    before.append(_relative_error(sums.ata, sums.atb, sums.btb, ones))
    scales = _solve(sums.ata, sums.atb)
    if scales is None:
        skipped.append(what)
        scales = ones
    after.append(_relative_error(sums.ata, sums.atb, sums.btb, scales))
    return scales


def _ffn_rows(layer: _Layer, real: torch.Tensor) -> torch.Tensor:
    if not layer.first_token_only:
        return real
    rows = torch.zeros_like(real)
    rows[:, 0] = real[:, 0]
    return rows


def _tune_ffn(model, layer: _Layer, state: dict, report: TuningReport) -> None:
    heads, neurons = state["heads"], state["neurons"]
    kept = [int(j) for j in torch.nonzero(neurons[layer.index]).flatten()]
    if not kept:
        return
    modules = recorded_inputs(model, layer.index)
    sums = _Sums(len(kept))
    for target, call_s in zip(state["ffn_targets"], state["student"], strict=True):
        student, _ = _run_recorded(layer, call_s, modules, _gated(model, heads, neurons))
        _ffn_sums(layer, target, student, _ffn_rows(layer, call_s.real), kept, sums)
    with torch.no_grad():
        weight = layer.ffn_output.weight[:, kept].to("cpu", torch.float64)
        sums.ata *= weight.t() @ weight  # (HᵀH) ∘ (WᵀW)
    scales = _scales(sums, f"feed-forward of layer {layer.index}", report.ffn_before,
                     report.ffn_after, report.skipped)
    neurons[layer.index, kept] = scales.to(neurons.dtype)


def _advance(model, layer: _Layer, state: dict) -> None:
    """Feed the next layer: the student's outputs with the tuned gates, the teacher's."""
    gates = lambda: _gated(model, state["heads"], state["neurons"])  # noqa: E731
    with torch.no_grad():
        student = []
        for call in state["student"]:
            with gates():
                student.append(_run(layer.module, call))
    following = layer.index + 1
    if following < len(state["calls"][0]):
        state["teacher"] = [_with_hidden(calls[following], hidden) for calls, hidden
                            in zip(state["calls"], state["next_teacher"], strict=True)]
        state["student"] = [_with_hidden(calls[following], hidden) for calls, hidden
                            in zip(state["calls"], student, strict=True)]


def tune_masks(model: nn.Module, batches: Iterable[dict], heads: torch.Tensor,
               neurons: torch.Tensor, *, first_token_only: bool = False,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, TuningReport]:
    """Least-squares scales for the heads and neurons that the 0/1 masks `heads` `[layers,
    heads]` and `neurons` `[layers, neurons]` keep, layer by layer from the bottom; returns
    the gates (scales where kept, 0 where pruned) and the reconstruction errors.

    Example:
        >>> head_gates, neuron_gates, report = tune_masks(model, batches, head_mask,
        ...                                               neuron_mask, first_token_only=True)
        >>> report.ffn_after[-1] <= report.ffn_before[-1]
        True
    """
    device = model_device(model)
    layout = head_layout(model)
    batches = list(batches_on_device(batches, device, desc="calibration", progress=False))
    state = {"heads": heads.clone().float().to(device),
             "neurons": neurons.clone().float().to(device)}
    report = TuningReport()
    with eval_mode(model):
        state["calls"] = _record_calls(model, batches)
        state["teacher"] = [calls[0] for calls in state["calls"]]
        state["student"] = list(state["teacher"])
        layers = distinct_layers(model)
        for index in range(len(layers)):
            blocks = attention_blocks(model)[index], feed_forwards(model)[index]
            layer = _Layer(index, layers[index], blocks[0].output, blocks[1].output,
                           layout.kept[index], layout.head_dim,
                           first_token_only and index == len(layers) - 1)
            _tune_attention(model, layer, state, report)
            _tune_ffn(model, layer, state, report)
            _advance(model, layer, state)
    return state["heads"].cpu(), state["neurons"].cpu(), report


def fold_scales(model: nn.Module, heads: torch.Tensor, neurons: torch.Tensor) -> nn.Module:
    """Multiply the gates into the output projections (head h's input columns of the
    attention output projection, neuron j's column of the feed-forward output projection),
    in place: the model then computes what the gated one did. Units gated to 0 are left for
    `remove_units` to take out."""
    layout = head_layout(model)
    d = layout.head_dim
    with torch.no_grad():
        for index, (attention, ffn) in enumerate(zip(attention_blocks(model),
                                                     feed_forwards(model), strict=True)):
            weight = attention.output.weight
            for position, head in enumerate(layout.kept[index]):
                weight[:, position * d:(position + 1) * d] *= heads[index, head]
            kept = neuron_layout(model).kept[index]
            ffn.output.weight.mul_(neurons[index, list(kept)].to(ffn.output.weight)[None, :])
    return model
