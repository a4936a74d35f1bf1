"""The sections of a study config: one frozen dataclass per section, with its defaults, and
the function that reads and checks that section of the TOML (`read_<section>`).

Every reader records its problems in a `Problems` and returns the section (defaults where a
value is wrong), so that the whole config is checked before anything is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from headcount.choices import (
    ESTIMATORS,
    NORMALIZATIONS,
    ORDERS,
    PROBLEMS,
    SCHEDULES,
    SCOPES,
    UNITS,
)
from headcount.study.config_checks import (
    FRACTION,
    NAME,
    POSITIVE_INT,
    Problems,
    Rule,
    names,
    ratio_list,
    ratios,
    reader,
    section,
    table_of,
    unique,
    unknown_keys,
    value,
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    # A checkpoint with a masked-LM head for the pre-train task (default: `path`).
    mlm_path: str | None = None
    # Fit an MLM head on the frozen encoder first (checkpoints that lack one).
    fit_mlm_head: bool = False


@dataclass(frozen=True)
class TaskSpec:
    name: str
    task: str
    data_dir: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    eval_split: str = "dev"
    # file:/dir: tasks fine-tuned from a checkpoint without a trained head: the classes in
    # this order, and classification or regression instead of detecting it from the labels
    # (as `--labels` and `--problem`).
    labels: tuple[str, ...] | None = None
    problem: str | None = None


@dataclass(frozen=True)
class PretrainSpec:
    text: str = ""
    importance_max_examples: int | None = 512
    importance_fraction: float | None = None
    curve_max_examples: int | None = 256
    curve_fraction: float | None = None
    max_length: int = 128
    fit_steps: int = 300


@dataclass(frozen=True)
class FinetuneSpec:
    epochs: float = 3.0
    lr: float = 2e-5
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_steps: int | None = None
    train_fraction: float | None = None
    train_max_examples: int | None = None


@dataclass(frozen=True)
class ImportanceSpec:
    normalizations: tuple[str, ...] = ("l1", "l2", "none")
    split: str = "train"
    fraction: float | None = 0.2
    max_examples: int | None = None
    batch_size: int = 32


@dataclass(frozen=True)
class PruningSpec:
    units: str = "heads"  # heads, neurons or both (each to the curve's ratio)
    schedule: str = "one-shot"
    step: float = 0.1
    keep_one_per_layer: bool = False
    split: str = "dev"
    fraction: float | None = None
    max_examples: int | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class AnalysesSpec:
    recall: bool = True
    recall_threshold: float = 0.9
    drift: bool = True
    drift_max_examples: int | None = 256
    correlation: bool = True
    freezing: tuple[int, ...] = (5,)
    pruned_finetune: float | None = 0.5


@dataclass(frozen=True)
class OrdersSpec:
    """Pruning orders compared with importance order on the same curves (random, layer
    location), and fine-tuning after pruning by each of them."""

    names: tuple[str, ...] = ()
    draws: int = 3                          # orders with a seed: draws per study seed
    finetune: tuple[str, ...] = ()          # orders whose pruned models are fine-tuned again
    finetune_ratios: tuple[float, ...] = (0.5,)
    compensation: bool = True               # importance before/after that fine-tuning


@dataclass(frozen=True)
class EstimatorsSpec:
    """Importance estimators compared with exact ablation (Spearman), and their curves."""

    names: tuple[str, ...] = ()
    max_examples: int | None = 256          # examples every estimator is computed on
    curves: bool = True


SPARSITY_LEVELS = tuple(round(0.1 * i, 1) for i in range(10))


@dataclass(frozen=True)
class SparsitySpec:
    """Unstructured weight-magnitude pruning at sparsity levels (Gordon et al.)."""

    levels: tuple[float, ...] = ()
    scope: str = "global"
    finetune_levels: tuple[float, ...] | None = None  # None: every level
    after_finetune: bool = True

    @property
    def levels_to_finetune(self) -> tuple[float, ...]:
        return self.levels if self.finetune_levels is None else self.finetune_levels


@dataclass(frozen=True)
class CompressSpec:
    """Compression to FLOPs budgets (Kwon et al.), compared with simpler ways; off when
    the section is absent."""

    budgets: tuple[float, ...] = ()
    seq_length: int = 128
    max_examples: int = 512
    batch_size: int = 32


# --------------------------------------------------------------------------- [study]


def read_study(raw: dict, problems: Problems) -> tuple[str, list[int], str]:
    """[study]: (name, seeds, device)."""
    study = raw.get("study", {})
    unknown_keys(study, "study", {"name", "seeds", "device"}, problems)
    name = value(study, "name", "study", Rule(str), "study", problems)
    seeds = study.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.add("study.seeds", f"{seeds!r}; allowed: a non-empty list of integers")
        seeds = [0]
    if len(set(seeds)) != len(seeds):
        problems.add("study.seeds", f"{seeds!r} repeats a seed")
    device = value(study, "device", "study", Rule(
        str, check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
        allowed="auto, cpu, cuda, cuda:N"), "auto", problems)
    return name, seeds, device


# --------------------------------------------------------------------------- [[models]], [[tasks]]


def read_models(raw: dict, problems: Problems) -> tuple[ModelSpec, ...]:
    return _entries(raw, "models", ModelSpec, "name, path", problems, _model)


def read_tasks(raw: dict, problems: Problems) -> tuple[TaskSpec, ...]:
    return _entries(raw, "tasks", TaskSpec, "name, task", problems, _task)


def _entries(raw: dict, name: str, spec_class, required: str, problems: Problems,
             read_entry) -> tuple:
    """The [[name]] entries, each read by `read_entry(entry, where, problems)`; at least one,
    with unique names."""
    entries = raw.get(name, [])
    if not isinstance(entries, list) or not entries:
        problems.add(name, f"at least one [[{name}]] entry ({required}) is required")
        return ()
    specs = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        unknown_keys(entry, where, {f.name for f in fields(spec_class)}, problems)
        specs.append(read_entry(entry, where, problems))
    unique([spec.name for spec in specs], name, problems)
    return tuple(specs)


def _model(entry: dict, where: str, problems: Problems) -> ModelSpec:
    name = value(entry, "name", where, Rule(str), "", problems)
    path = value(entry, "path", where, Rule(str), "", problems)
    if not name or not NAME.match(name):
        problems.add(f"{where}.name", f"{name!r}: a short name of letters, digits, -_. is "
                     "required (it names output folders)")
    if not path:
        problems.add(f"{where}.path", "a checkpoint directory or hub name is required")
    mlm_path = value(entry, "mlm_path", where, Rule(str), None, problems)
    fit = value(entry, "fit_mlm_head", where, Rule(bool), False, problems)
    if mlm_path and fit:
        problems.add(f"{where}.fit_mlm_head", "give either mlm_path or fit_mlm_head = true")
    return ModelSpec(name, path, mlm_path, fit)


def _task(entry: dict, where: str, problems: Problems) -> TaskSpec:
    values = {f.name: value(entry, f.name, where, Rule(str), f.default, problems)
              for f in fields(TaskSpec) if f.name not in ("labels", "problem")}
    values["problem"] = value(entry, "problem", where, Rule(
        str, check=lambda v: v in PROBLEMS, allowed=", ".join(PROBLEMS)), None, problems)
    values["labels"] = _labels(entry, where, problems)
    if not values["name"] or not NAME.match(str(values["name"])):
        problems.add(f"{where}.name", f"{values['name']!r}: a short name of letters, "
                     "digits, -_. is required")
    if not values["task"]:
        problems.add(f"{where}.task", "required: a GLUE name (sst2, cola, ...), "
                     "file:PATH or dir:PATH")
    elif str(values["task"]).startswith("mlm:"):
        problems.add(f"{where}.task", "the masked-LM task is [pretrain].text, not a "
                     "downstream task")
    if (values["labels"] or values["problem"]) and not str(values["task"]).startswith(
            ("file:", "dir:")):
        problems.add(f"{where}.labels" if values["labels"] else f"{where}.problem",
                     f"only for file: and dir: tasks, not {values['task']!r} (GLUE tasks "
                     "have their own classes)")
    if values["labels"] and values["problem"] == "regression":
        problems.add(f"{where}.labels", "class names do not go with problem = \"regression\"")
    return TaskSpec(**values)


def _labels(entry: dict, where: str, problems: Problems) -> tuple[str, ...] | None:
    """A task's `labels`: two or more distinct class names (strings)."""
    if "labels" not in entry:
        return None
    labels = entry["labels"]
    if (not isinstance(labels, list) or len(labels) < 2
            or not all(isinstance(name, str) and name.strip() for name in labels)
            or len(set(labels)) != len(labels)):
        problems.add(f"{where}.labels", f"{labels!r}; allowed: a list of two or more "
                     "distinct class names, e.g. [\"neg\", \"neutral\", \"pos\"]")
        return None
    return tuple(name.strip() for name in labels)


# --------------------------------------------------------------------------- the reference study

POSITIVE = dict(check=lambda v: v > 0, allowed="a positive number")
LENGTH = dict(check=lambda v: v >= 8, allowed="an integer >= 8")


def read_pretrain(raw: dict, problems: Problems) -> PretrainSpec:
    pretrain = section(raw, "pretrain", PretrainSpec, problems, {
        "text": reader(str),
        "importance_max_examples": reader(int, optional=True, **POSITIVE_INT),
        "importance_fraction": reader(float, optional=True, **FRACTION),
        "curve_max_examples": reader(int, optional=True, **POSITIVE_INT),
        "curve_fraction": reader(float, optional=True, **FRACTION),
        "max_length": reader(int, **LENGTH),
        "fit_steps": reader(int, **POSITIVE_INT),
    })
    if not pretrain.text:
        problems.add("pretrain.text", "required: a text file or directory for the masked-LM "
                     "task (e.g. wiki.valid.tokens, read from the config file's folder)")
    elif not Path(pretrain.text.removeprefix("mlm:")).exists():
        problems.add("pretrain.text", f"{pretrain.text!r} does not exist (a relative path "
                     "in a config file is read from the file's folder)")
    return pretrain


def read_finetune(raw: dict, problems: Problems) -> FinetuneSpec:
    return section(raw, "finetune", FinetuneSpec, problems, {
        "epochs": reader(float, **POSITIVE),
        "lr": reader(float, **POSITIVE),
        "batch_size": reader(int, **POSITIVE_INT),
        "max_length": reader(int, **LENGTH),
        "warmup": reader(float, check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
        "weight_decay": reader(float, check=lambda v: v >= 0, allowed="a number >= 0"),
        "max_steps": reader(int, optional=True, **POSITIVE_INT),
        "train_fraction": reader(float, optional=True, **FRACTION),
        "train_max_examples": reader(int, optional=True, **POSITIVE_INT),
    })


def read_importance(raw: dict, problems: Problems) -> ImportanceSpec:
    importance = section(raw, "importance", ImportanceSpec, problems, {
        "split": reader(str),
        "fraction": reader(float, optional=True, **FRACTION),
        "max_examples": reader(int, optional=True, **POSITIVE_INT),
        "batch_size": reader(int, **POSITIVE_INT),
    })
    normalizations = raw.get("importance", {}).get("normalizations", list(NORMALIZATIONS))
    if (not isinstance(normalizations, list) or not normalizations
            or any(n not in NORMALIZATIONS for n in normalizations)):
        problems.add("importance.normalizations",
                     f"{normalizations!r}; allowed: a non-empty list of "
                     f"{', '.join(NORMALIZATIONS)}")
        normalizations = list(NORMALIZATIONS)
    return ImportanceSpec(**{**importance.__dict__,
                             "normalizations": tuple(dict.fromkeys(normalizations))})


def read_pruning(raw: dict, problems: Problems) -> PruningSpec:
    return section(raw, "pruning", PruningSpec, problems, {
        "units": reader(str, check=lambda v: v in UNITS, allowed=", ".join(UNITS)),
        "schedule": reader(str, check=lambda v: v in SCHEDULES, allowed=", ".join(SCHEDULES)),
        "step": reader(float, **FRACTION),
        "keep_one_per_layer": reader(bool),
        "split": reader(str),
        "fraction": reader(float, optional=True, **FRACTION),
        "max_examples": reader(int, optional=True, **POSITIVE_INT),
        "batch_size": reader(int, **POSITIVE_INT),
    })


def read_analyses(raw: dict, problems: Problems) -> AnalysesSpec:
    analyses = section(raw, "analyses", AnalysesSpec, problems, {
        "recall": reader(bool),
        "recall_threshold": reader(float, **FRACTION),
        "drift": reader(bool),
        "drift_max_examples": reader(int, optional=True, **POSITIVE_INT),
        "correlation": reader(bool),
        "pruned_finetune": reader(float, optional=True, check=lambda v: 0 < v < 1,
                                  allowed="a ratio in (0, 1), or \"none\""),
    })
    freezing = raw.get("analyses", {}).get("freezing", list(AnalysesSpec.freezing))
    if (not isinstance(freezing, list)
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                       for k in freezing)):
        problems.add("analyses.freezing", f"{freezing!r}; allowed: a list of layer counts "
                     ">= 1 ([] to skip the freezing experiment)")
        freezing = []
    analyses = AnalysesSpec(**{**analyses.__dict__, "freezing": tuple(freezing)})
    if analyses.correlation and not analyses.drift:
        problems.add("analyses.correlation", "needs analyses.drift = true (it correlates "
                     "importance with the attention drift)")
    return analyses


# --------------------------------------------------------------------------- companion studies


def read_orders(raw: dict, problems: Problems) -> OrdersSpec:
    return section(raw, "orders", OrdersSpec, problems, {
        "names": names(tuple(o for o in ORDERS if o != "importance")),
        "finetune": names(ORDERS),
        "draws": reader(int, **POSITIVE_INT),
        "finetune_ratios": ratios(low_open=True, allowed="a list of ratios in (0, 1)"),
        "compensation": reader(bool),
    })


def read_estimators(raw: dict, problems: Problems) -> EstimatorsSpec:
    return section(raw, "estimators", EstimatorsSpec, problems, {
        "names": names(tuple(e for e in ESTIMATORS if e != "gradient")),
        "max_examples": reader(int, optional=True, **POSITIVE_INT),
        "curves": reader(bool),
    })


def read_sparsity(raw: dict, problems: Problems) -> SparsitySpec:
    table = table_of(raw, "sparsity", SparsitySpec, problems)
    if table is None:
        return SparsitySpec()
    allowed = "a list of sparsities in [0, 1)"
    # A [sparsity] section without levels means the default sweep 0, 10%, ..., 90%.
    default = SPARSITY_LEVELS if table else ()
    levels = ratio_list(table, "levels", "sparsity", default, problems, low_open=False,
                        allowed=allowed)
    finetune_levels = ratio_list(table, "finetune_levels", "sparsity", None, problems,
                                 low_open=False, allowed=allowed)
    if finetune_levels is not None and not set(finetune_levels) <= set(levels):
        problems.add("sparsity.finetune_levels", f"{list(finetune_levels)} must be among "
                     f"the levels {list(levels)}")
    scope = value(table, "scope", "sparsity",
                  Rule(str, check=lambda v: v in SCOPES, allowed=", ".join(SCOPES)), "global",
                  problems)
    after = value(table, "after_finetune", "sparsity", Rule(bool), True, problems)
    return SparsitySpec(tuple(levels), scope, finetune_levels, after)


COMPRESS_BUDGETS = (0.8, 0.6, 0.4)


def read_compress(raw: dict, problems: Problems) -> CompressSpec:
    table = table_of(raw, "compress", CompressSpec, problems)
    if table is None:
        return CompressSpec()
    # A [compress] section without budgets means the default ones; no section, none.
    default = COMPRESS_BUDGETS if "compress" in raw else ()
    budgets = ratio_list(table, "budgets", "compress", default, problems, low_open=True,
                         allowed="a list of shares of the FLOPs in (0, 1)")
    read = {key: value(table, key, "compress", Rule(int, **POSITIVE_INT), default, problems)
            for key, default in (("seq_length", 128), ("max_examples", 512),
                                 ("batch_size", 32))}
    return CompressSpec(tuple(budgets), **read)
