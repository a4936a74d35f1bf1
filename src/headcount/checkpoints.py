"""Save and load physically pruned checkpoints.

A pruned checkpoint is an ordinary Hugging Face directory (safetensors weights, config,
tokenizer) whose config also records the heads each layer still has
(`headcount_kept_heads`). Plain `from_pretrained` cannot load it, because the attention
weights are smaller than the config says; `load_pruned` builds the full-size model from the
config, removes the same heads, and then loads the weights, so every shape is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from headcount.errors import HeadcountError
from headcount.io import write_json
from headcount.layouts import KEPT_HEADS_KEY, head_layout
from headcount.removal import remove_heads

LAYOUT_FILE = "heads.json"


def is_pruned_config(config) -> bool:
    return getattr(config, KEPT_HEADS_KEY, None) is not None


def save_pruned(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Write `model` (pruned or not) with its head layout; `load_pruned` reads it back.

    Besides the config entry, `heads.json` states the layout for people and scripts:
    the kept and removed heads per layer.

    Example:
        >>> remove_heads(model, [(0, 3)])
        >>> save_pruned(model, "pruned/", tokenizer)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layout = head_layout(model)
    setattr(model.config, KEPT_HEADS_KEY, [list(heads) for heads in layout.kept])
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    write_json(directory / LAYOUT_FILE, {
        "family": layout.family,
        "layers": layout.num_distinct_layers,
        "heads_per_layer": layout.num_heads,
        "heads_remaining": layout.heads_remaining,
        "kept": [list(heads) for heads in layout.kept],
        "removed": [sorted(set(range(layout.num_heads)) - set(heads)) for heads in layout.kept],
    })
    return directory


def check_empty_target(directory: str | Path) -> Path:
    """Refuse an output directory that holds something, or whose parent is missing."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise HeadcountError(f"--out {directory} exists and is not an empty directory")
    if not directory.parent.is_dir():
        raise HeadcountError(f"output directory does not exist: {directory.parent}")
    return directory


def save_pruned_atomically(model: nn.Module, directory: str | Path, tokenizer=None,
                           records: dict[str, dict] | None = None) -> Path:
    """`save_pruned` into a temporary directory beside `directory`, renamed into place when
    complete: an interrupted save leaves no half-written checkpoint. `records` are JSON
    files (name -> content) written with it, e.g. the metrics of a fine-tuning run."""
    directory = check_empty_target(directory)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_pruned(model, staging, tokenizer)
        for name, record in (records or {}).items():
            write_json(staging / name, record)
        # mkdtemp (and some writers) create private files: give them a plain file's mode.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        for path in staging.rglob("*"):
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _validated_layout(config, source: str) -> list[list[int]]:
    kept = getattr(config, KEPT_HEADS_KEY)
    num_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    rows = 1 if config.model_type == "albert" else num_layers
    if not isinstance(kept, list) or len(kept) != rows:
        raise HeadcountError(
            f"{source}: {KEPT_HEADS_KEY} must list the kept heads of {rows} layers"
        )
    for layer, heads in enumerate(kept):
        if (not isinstance(heads, list) or len(set(heads)) != len(heads)
                or any(not isinstance(h, int) or not 0 <= h < num_heads for h in heads)):
            raise HeadcountError(
                f"{source}: layer {layer} of {KEPT_HEADS_KEY} is {heads!r}; expected distinct "
                f"head indices in 0..{num_heads - 1}"
            )
    return kept


def _state_dict(directory: Path) -> dict:
    from safetensors.torch import load_file

    single = directory / "model.safetensors"
    if single.exists():
        return load_file(single)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(directory / shard))
        return state
    raise HeadcountError(f"{directory} has no safetensors weights (model.safetensors)")


def _loaded_names(model: nn.Module, missing: set[str]) -> set[str]:
    """Missing keys that are really present: tied parameters (an MLM decoder tied to the
    word embeddings) are saved once, under one of their names."""
    names_of: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(parameter), []).append(name)
    present = set()
    for names in names_of.values():
        if any(name not in missing for name in names):
            present.update(names)
    return missing - present


def _match_prefix(state: dict, model: nn.Module) -> dict:
    """Add or strip the base-model prefix ('bert.') so that keys saved from a model with or
    without a task head fit `model`, as from_pretrained does."""
    prefix = model.base_model_prefix + "."
    model_has_prefix = any(k.startswith(prefix) for k in model.state_dict())
    state_has_prefix = any(k.startswith(prefix) for k in state)
    if model_has_prefix and not state_has_prefix:
        return {prefix + k: v for k, v in state.items()}
    if state_has_prefix and not model_has_prefix:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_pruned(directory: str | Path, model_class, config=None, *,
                attn_implementation: str | None = None, **config_overrides) -> tuple:
    """Build `model_class` (an Auto* class) from the checkpoint's config, remove the recorded
    heads, load the weights. Returns (model, missing head keys).

    A layout that does not match the weights (wrong number of heads for a tensor's shape,
    missing or unexpected encoder weights) is a HeadcountError naming the offending tensor.
    """
    from transformers import AutoConfig

    directory = Path(directory)
    config = config or AutoConfig.from_pretrained(directory)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    kept = _validated_layout(config, str(directory))
    setattr(config, KEPT_HEADS_KEY, None)  # build the full-size model first
    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = model_class.from_config(config, **options)
    layout = head_layout(model)
    removed = [
        (layer, head)
        for layer, heads in enumerate(kept)
        for head in range(layout.num_heads)
        if head not in heads
    ]
    try:
        remove_heads(model, removed)
    except HeadcountError as error:
        raise HeadcountError(f"{directory}: {error}") from None
    state = _match_prefix(_state_dict(directory), model)
    shapes = model.state_dict()
    for name, tensor in state.items():
        if name in shapes and shapes[name].shape != tensor.shape:
            raise HeadcountError(
                f"{directory}: the head layout in config.json does not match the weights: "
                f"{name} has shape {list(tensor.shape)}, the layout implies "
                f"{list(shapes[name].shape)}"
            )
    result = model.load_state_dict(state, strict=False)
    prefix = model.base_model_prefix + "."
    missing = _loaded_names(model, set(result.missing_keys))
    has_prefix = any(k.startswith(prefix) for k in shapes)

    def in_encoder(key: str) -> bool:
        # The pooler belongs to the classification head: MLM checkpoints have none.
        return (key.startswith(prefix) or not has_prefix) and ".pooler." not in f".{key}"

    encoder_missing = sorted(k for k in missing if in_encoder(k))
    if encoder_missing:
        raise HeadcountError(
            f"{directory}: weights missing from the checkpoint: {', '.join(encoder_missing[:4])}"
        )
    return model.eval(), sorted(k for k in missing if not in_encoder(k))
