"""Export a (pruned) model to ONNX for deployment, and check the exported graph.

`torch.onnx.export` with the dynamo exporter (torch's supported one), falling back to the
TorchScript exporter where dynamo cannot trace a model; batch size and sequence length stay
dynamic. The check runs the file in onnxruntime on CPU on inputs of another shape than the
export's and compares its outputs with PyTorch's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headcount.arch import takes_token_types
from headcount.errors import HeadcountError

EXPORTERS = ("dynamo", "torchscript")
SAMPLE_TEXTS = ("The pruned model still reads whole sentences.",
                "Short one.", "A third example, padded to the longest of the batch.")


def sample_inputs(model: nn.Module, tokenizer, texts=SAMPLE_TEXTS) -> dict[str, torch.Tensor]:
    """A padded batch of the inputs the model takes (token types only where it uses them)."""
    with_types = takes_token_types(model.config)
    batch = tokenizer(list(texts), padding=True, return_tensors="pt",
                      return_token_type_ids=with_types)
    names = ("input_ids", "attention_mask", "token_type_ids") if with_types \
        else ("input_ids", "attention_mask")
    device = next(model.parameters()).device
    return {name: batch[name].to(device) for name in names}


def _output_names(model: nn.Module, inputs: dict) -> list[str]:
    with torch.inference_mode():
        output = model(**inputs)
    return [name for name, value in output.items() if isinstance(value, torch.Tensor)]


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress, deprecation notes and log lines (e.g. "torchvision is
    not installed"): the command prints its own line instead."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)


def _export(model: nn.Module, inputs: dict, path: Path, exporter: str,
            outputs: list[str]) -> None:
    names = list(inputs)
    with _quiet_exporter():
        if exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(model, (), str(path), kwargs=inputs, input_names=names,
                              output_names=outputs, dynamo=True, verbose=False,
                              dynamic_shapes={name: {0: batch, 1: seq} for name in names})
        else:
            axes = {name: {0: "batch", 1: "sequence"} for name in names}
            axes.update({name: {0: "batch"} for name in outputs})
            torch.onnx.export(model, (), str(path), kwargs=inputs, input_names=names,
                              output_names=outputs, dynamo=False, dynamic_axes=axes,
                              opset_version=17)


def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], path: str | Path,
                exporter: str = "auto") -> str:
    """Write `model` (in eval mode) as ONNX to `path`; the exporter that worked.

    Example:
        >>> export_onnx(model, sample_inputs(model, tokenizer), "model.onnx")
        'dynamo'
    """
    path = Path(path)
    model.eval()
    outputs = _output_names(model, inputs)
    tried = EXPORTERS if exporter == "auto" else (exporter,)
    errors = []
    for name in tried:
        try:
            _export(model, inputs, path, name, outputs)
            return name
        except Exception as error:  # noqa: BLE001 - the next exporter may work; all are reported
            errors.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0]}")
    raise HeadcountError(f"could not export {type(model).__name__} to ONNX ("
                         + "; ".join(errors) + ")")


def check_onnx(path: str | Path, model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between onnxruntime's first output and PyTorch's on
    `inputs` (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: value.cpu().numpy() for name, value in inputs.items()}
    ours = session.run(None, feed)[0]
    with torch.inference_mode():
        theirs = next(iter(model(**inputs).values())).float().cpu().numpy()
    if ours.shape != theirs.shape:
        raise HeadcountError(f"the ONNX graph's output has shape {list(ours.shape)}, "
                             f"PyTorch's {list(theirs.shape)}")
    return float(np.abs(ours - theirs).max())


PROTOBUF_LIMIT = 2 << 30  # bytes one ONNX protobuf file can hold


def write_onnx(source: Path, out: Path) -> None:
    """Write the graph at `source` (and any external weights beside it) to `out` as one
    file, or, past protobuf's 2 GB limit, as `out` plus its weights in `out.data`; files get
    the mode of ordinary new files."""
    import onnx

    graph = onnx.load(str(source))  # loads external weights too
    large = sum(f.stat().st_size for f in source.parent.iterdir()) > PROTOBUF_LIMIT
    onnx.save_model(graph, str(out), save_as_external_data=large,
                    location=f"{out.name}.data" if large else None)
    umask = os.umask(0)
    os.umask(umask)
    for path in (out, out.with_name(f"{out.name}.data")):
        if path.exists():
            path.chmod(0o666 & ~umask)
