"""The `export` and `migrate` jobs: a checkpoint to ONNX, and a transformers-4 pruned
checkpoint to a portable one."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from headcount.checkpoints import save_pruned_atomically, transformers4_kept_heads
from headcount.errors import HeadcountError
from headcount.export import check_onnx, export_onnx, sample_inputs, write_onnx
from headcount.io import check_output_path, versions
from headcount.layouts import head_layout, neuron_layout
from headcount.models import CHECKPOINT_HEAD, load_config, load_model

# onnxruntime against PyTorch on the same inputs: float32 kernels differ in summation order.
ONNX_TOLERANCE = 1e-4


def export_job(model: str, out: str | Path, *, exporter: str = "auto") -> dict:
    """Export the checkpoint `model` (pruned or not, with its own head) to ONNX at `out`
    (written atomically), and check the graph against PyTorch in onnxruntime.

    Example:
        >>> export_job("runs/minilm-sst2-half", "model.onnx")["max_abs_diff"] < 1e-4
        True
    """
    out = check_output_path(out)
    if out.suffix != ".onnx":
        raise HeadcountError(f"--out {out}: the ONNX file's name must end in .onnx")
    loaded = load_model(model, CHECKPOINT_HEAD, device="cpu")
    started = time.perf_counter()
    export_inputs = sample_inputs(loaded.model, loaded.tokenizer)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        used = export_onnx(loaded.model, export_inputs, staging / "model.onnx", exporter)
        # Another batch size and length than the export's: the axes must really be dynamic.
        check_inputs = sample_inputs(loaded.model, loaded.tokenizer,
                                     ("one", "two words", "three words here", "and four"))
        difference = check_onnx(staging / "model.onnx", loaded.model, check_inputs)
        if difference > ONNX_TOLERANCE:
            raise HeadcountError(f"the exported graph differs from PyTorch by {difference:.2e} "
                                 f"(more than {ONNX_TOLERANCE:g}); not written")
        # The exporter may keep the weights in a file beside the graph: write one
        # self-contained file (weights beside it only past protobuf's 2 GB limit).
        write_onnx(staging / "model.onnx", out)
        check_onnx(out, loaded.model, check_inputs)  # the written file runs on its own
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": model, "out": str(out), "exporter": used, "inputs": list(export_inputs),
        "max_abs_diff": difference, "heads_remaining": head_layout(loaded.model).heads_remaining,
        "neurons_remaining": neuron_layout(loaded.model).neurons_remaining,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "bytes": out.stat().st_size, "seconds": time.perf_counter() - started,
        "versions": versions(),
    }


def migrate_job(model: str, out: str | Path) -> dict:
    """Rewrite a checkpoint pruned under transformers 4 (`pruned_heads` in its config, which
    transformers 5 ignores) as a portable headcount checkpoint at `out`.

    Example:
        >>> migrate_job("old-pruned-bert/", "portable/")["heads_remaining"]
    """
    config = load_config(model)
    if transformers4_kept_heads(config) is None:
        raise HeadcountError(
            f"{model} has no pruned_heads in its config: nothing to migrate (a checkpoint "
            "that headcount pruned, or an unpruned one, loads as it is)")
    loaded = load_model(model, CHECKPOINT_HEAD, device="cpu")
    save_pruned_atomically(loaded.model, out, loaded.tokenizer)
    layout = head_layout(loaded.model)
    return {"model": model, "out": str(out), "heads_remaining": layout.heads_remaining,
            "kept": [list(heads) for heads in layout.kept], "versions": versions()}
