"""Save and load physically pruned checkpoints.

A pruned checkpoint is an ordinary Hugging Face directory (safetensors weights, config,
tokenizer) whose config also records the heads and feed-forward neurons each layer still
has (`headcount_kept_heads`, `headcount_kept_neurons`), with a generated modeling file that
lets stock transformers load it (`headcount.portable`). `load_pruned` builds the full-size
model from the config, resizes it to the recorded layout, and then loads the weights, so
every shape is checked. Checkpoints pruned under transformers 4 (`pruned_heads` in the
config, which transformers 5 ignores) load the same way.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from headcount.arch import family_of
from headcount.errors import HeadcountError
from headcount.io import write_json
from headcount.layouts import head_layout, intermediate_size, neuron_layout
from headcount.portable import make_portable
from headcount.resize import KEPT_HEADS_KEY, KEPT_NEURONS_KEY, resize_to_layout

LAYOUT_FILE = "heads.json"


def transformers4_kept_heads(config) -> list[list[int]] | None:
    """The kept heads of a checkpoint pruned under transformers 4 (`pruned_heads`: layer ->
    removed heads, by original index), or None when it has none."""
    pruned = getattr(config, "pruned_heads", None) or {}
    if not pruned or getattr(config, KEPT_HEADS_KEY, None) is not None:
        return None
    num_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    rows = 1 if family_of(config).shared_layers else num_layers
    removed = {int(layer): {int(head) for head in heads} for layer, heads in pruned.items()}
    return [[h for h in range(num_heads) if h not in removed.get(layer, set())]
            for layer in range(rows)]


def is_pruned_config(config) -> bool:
    return (getattr(config, KEPT_HEADS_KEY, None) is not None
            or getattr(config, KEPT_NEURONS_KEY, None) is not None
            or transformers4_kept_heads(config) is not None)


def save_pruned(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Write `model` (pruned or not) with its head and neuron layout; `load_pruned` reads it
    back, and a pruned one loads with stock transformers too (`headcount.portable`).

    Besides the config entries, `heads.json` states the layout for people and scripts:
    the kept and removed heads per layer, and the neurons kept per layer.

    Example:
        >>> remove_units(model, {"heads": [(0, 3)], "neurons": [(1, 7)]})
        >>> save_pruned(model, "pruned/", tokenizer)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    heads, neurons = head_layout(model), neuron_layout(model)
    pruned = heads.units_remaining < heads.total_units or \
        neurons.units_remaining < neurons.total_units
    setattr(model.config, KEPT_HEADS_KEY, [list(kept) for kept in heads.kept])
    setattr(model.config, KEPT_NEURONS_KEY,
            [list(kept) for kept in neurons.kept] if pruned else None)
    if getattr(model.config, "pruned_heads", None):
        model.config.pruned_heads = {}  # transformers 4's record, now in KEPT_HEADS_KEY
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    if pruned:
        make_portable(directory, family_of(model.config))
    write_json(directory / LAYOUT_FILE, {
        "family": heads.family,
        "layers": heads.num_distinct_layers,
        "heads_per_layer": heads.num_heads,
        "heads_remaining": heads.heads_remaining,
        "kept": [list(kept) for kept in heads.kept],
        "removed": [sorted(set(range(heads.num_heads)) - set(kept)) for kept in heads.kept],
        "neurons_per_layer": neurons.num_neurons,
        "neurons_remaining": neurons.neurons_remaining,
        "neurons_kept_per_layer": [len(kept) for kept in neurons.kept],
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


def _validated_layout(config, source: str, key: str, count: int) -> list[list[int]] | None:
    """The kept units recorded under `key` (None: all), checked: one distinct list of
    indices in 0..count-1 per distinct layer."""
    kept = getattr(config, key, None)
    if kept is None:
        return None
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    rows = 1 if family_of(config).shared_layers else num_layers
    if not isinstance(kept, list) or len(kept) != rows:
        raise HeadcountError(f"{source}: {key} must list the kept units of {rows} layers")
    for layer, units in enumerate(kept):
        if (not isinstance(units, list) or len(set(units)) != len(units)
                or any(not isinstance(u, int) or not 0 <= u < count for u in units)):
            raise HeadcountError(
                f"{source}: layer {layer} of {key} is {units!r}; expected distinct indices "
                f"in 0..{count - 1}"
            )
    return kept


def _record_layout(config, source: str) -> None:
    """Check the recorded layout; a transformers-4 `pruned_heads` becomes headcount's."""
    converted = transformers4_kept_heads(config)
    if converted is not None:
        setattr(config, KEPT_HEADS_KEY, converted)
        config.pruned_heads = {}
    heads = _validated_layout(config, source, KEPT_HEADS_KEY,
                              getattr(config, "num_attention_heads", None) or config.n_heads)
    if heads is not None and family_of(config).shared_layers and not heads[0]:
        raise HeadcountError(f"{source}: {KEPT_HEADS_KEY} keeps no head of the shared layer")
    _validated_layout(config, source, KEPT_NEURONS_KEY, intermediate_size(config))


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
    """Build `model_class` (an Auto* class) from the checkpoint's config, resize it to the
    recorded heads and neurons, load the weights. Returns (model, missing head keys).

    A layout that does not match the weights (wrong number of heads for a tensor's shape,
    missing or unexpected encoder weights) is a HeadcountError naming the offending tensor.
    """
    from transformers import AutoConfig

    directory = Path(directory)
    config = copy.deepcopy(config or AutoConfig.from_pretrained(directory))
    for key, value in config_overrides.items():
        setattr(config, key, value)
    _record_layout(config, str(directory))
    if hasattr(config, "auto_map"):
        del config.auto_map  # headcount builds the family's own classes
    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # Built full size from the config (which keeps the original sizes), then resized.
    model = model_class.from_config(config, **options)
    resize_to_layout(model, family_of(config).paths)
    state = _match_prefix(_state_dict(directory), model)
    shapes = model.state_dict()
    for name, tensor in state.items():
        if name in shapes and shapes[name].shape != tensor.shape:
            raise HeadcountError(
                f"{directory}: the head and neuron layout in config.json does not match the "
                f"weights: "
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
