"""The `fit-mlm-head` job: fit a masked-LM head on a frozen encoder and save the checkpoint."""

from __future__ import annotations

from pathlib import Path

from headcount.checkpoints import check_empty_target
from headcount.mlm_head import HeadFit, fit_mlm_head, save_fitted_head


def fit_mlm_head_job(model_path: str, text_path: str, out: str | Path,
                     fit: HeadFit | None = None, *, device="auto",
                     progress: bool = False) -> dict:
    """Check `out` first, fit, save; the record (with `out`) as written to mlm_head.json."""
    check_empty_target(out)
    model, tokenizer, record = fit_mlm_head(model_path, text_path, fit or HeadFit(), device=device,
                                            progress=progress)
    record = {**record, "out": str(out)}
    save_fitted_head(model, tokenizer, record, out)
    return record
