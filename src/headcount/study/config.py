"""The study's TOML configuration: schema, defaults, and validation that reports every
problem at once, each naming its key and what is allowed, before any work starts.

    [study]      name, seeds, device
    [[models]]   name, path, mlm_path | fit_mlm_head
    [[tasks]]    name, task, data_dir, text_column, text_pair_column, label_column,
                 train_split, eval_split
    [pretrain]   text, importance_max_examples, importance_fraction, curve_max_examples,
                 curve_fraction, max_length, fit_steps
    [finetune]   epochs, lr, batch_size, max_length, warmup, weight_decay, max_steps,
                 train_fraction, train_max_examples
    [importance] normalizations, split, fraction, max_examples, batch_size
    [pruning]    schedule, step, keep_one_per_layer, split, fraction, max_examples, batch_size
    [analyses]   recall, recall_threshold, drift, drift_max_examples, correlation,
                 freezing, pruned_finetune
    [orders]     names, draws, finetune, finetune_ratios, compensation   (Budhraja et al.)
    [estimators] names, max_examples, curves                            (vs exact ablation)
    [sparsity]   levels, scope, finetune_levels, after_finetune         (Gordon et al.)

The three companion sections are off when absent: each adds work (curves, fine-tuning runs)
that a study of importance alone does not need.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from headcount.choices import NORMALIZATIONS, SCHEDULES
from headcount.errors import ConfigError


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
class StudyConfig:
    name: str
    seeds: tuple[int, ...]
    device: str
    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    importance: ImportanceSpec = field(default_factory=ImportanceSpec)
    pruning: PruningSpec = field(default_factory=PruningSpec)
    analyses: AnalysesSpec = field(default_factory=AnalysesSpec)
    orders: OrdersSpec = field(default_factory=OrdersSpec)
    estimators: EstimatorsSpec = field(default_factory=EstimatorsSpec)
    sparsity: SparsitySpec = field(default_factory=SparsitySpec)
    text: str = ""  # the TOML as given, for the run directory and the report

    @property
    def digest(self) -> str:
        """Identifies the configuration of a run directory (its TOML, byte for byte)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Problems:
    """Collects every configuration problem, so that all are reported together."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


def _value(table: dict, key: str, where: str, kind, default, problems: _Problems, *,
           optional: bool = False, check=None, allowed: str = ""):
    """Read `key` of `table` as `kind`; record a problem (and return the default) if it is
    the wrong type or fails `check`."""
    if key not in table:
        return default
    value = table[key]
    if value is None or (optional and value == "none"):
        return None if optional else default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        problems.add(f"{where}.{key}", f"{value!r} is not {_type_name(kind)}"
                     + (f"; allowed: {allowed}" if allowed else ""))
        return default
    if check is not None and not check(value):
        problems.add(f"{where}.{key}", f"{value!r} is not allowed; allowed: {allowed}")
        return default
    return value


def _table(raw: dict, name: str, spec_class, problems: _Problems) -> dict | None:
    """Section `name` of the config ({} when absent) with its unknown keys reported, or
    None (a problem recorded) when it is not a table."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        problems.add(name, f"must be a table ([{name}])")
        return None
    _unknown_keys(table, name, {f.name for f in fields(spec_class)}, problems)
    return table


def _section(raw: dict, name: str, spec_class, problems: _Problems, readers: dict):
    table = _table(raw, name, spec_class, problems)
    if table is None:
        return spec_class()
    values = {key: reader(table, key, name, problems) for key, reader in readers.items()}
    return spec_class(**{k: v for k, v in values.items() if v is not _KEEP})


_KEEP = object()


def _reader(kind, *, optional=False, check=None, allowed=""):
    def read(table, key, where, problems):
        if key not in table:
            return _KEEP
        return _value(table, key, where, kind, _KEEP, problems, optional=optional,
                      check=check, allowed=allowed)

    return read


def _unknown_keys(table: dict, where: str, allowed: set[str], problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            problems.add(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


POSITIVE_INT = dict(check=lambda v: v >= 1, allowed="an integer >= 1")
FRACTION = dict(check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]")


def _models(raw, problems) -> tuple[ModelSpec, ...]:
    entries = raw.get("models", [])
    if not isinstance(entries, list) or not entries:
        problems.add("models", "at least one [[models]] entry (name, path) is required")
        return ()
    models = []
    for index, entry in enumerate(entries):
        where = f"models[{index}]"
        _unknown_keys(entry, where, {f.name for f in fields(ModelSpec)}, problems)
        name = _value(entry, "name", where, str, "", problems)
        path = _value(entry, "path", where, str, "", problems)
        if not name or not _NAME.match(name):
            problems.add(f"{where}.name", f"{name!r}: a short name of letters, digits, -_. is "
                         "required (it names output folders)")
        if not path:
            problems.add(f"{where}.path", "a checkpoint directory or hub name is required")
        mlm_path = _value(entry, "mlm_path", where, str, None, problems)
        fit = _value(entry, "fit_mlm_head", where, bool, False, problems)
        if mlm_path and fit:
            problems.add(f"{where}.fit_mlm_head", "give either mlm_path or fit_mlm_head = true")
        models.append(ModelSpec(name, path, mlm_path, fit))
    _unique([m.name for m in models], "models", problems)
    return tuple(models)


def _tasks(raw, problems) -> tuple[TaskSpec, ...]:
    entries = raw.get("tasks", [])
    if not isinstance(entries, list) or not entries:
        problems.add("tasks", "at least one [[tasks]] entry (name, task) is required")
        return ()
    tasks = []
    for index, entry in enumerate(entries):
        where = f"tasks[{index}]"
        _unknown_keys(entry, where, {f.name for f in fields(TaskSpec)}, problems)
        values = {f.name: _value(entry, f.name, where, str, f.default, problems)
                  for f in fields(TaskSpec)}
        if not values["name"] or not _NAME.match(str(values["name"])):
            problems.add(f"{where}.name", f"{values['name']!r}: a short name of letters, "
                         "digits, -_. is required")
        if not values["task"]:
            problems.add(f"{where}.task", "required: a GLUE name (sst2, cola, ...), "
                         "file:PATH or dir:PATH")
        elif str(values["task"]).startswith("mlm:"):
            problems.add(f"{where}.task", "the masked-LM task is [pretrain].text, not a "
                         "downstream task")
        tasks.append(TaskSpec(**values))
    _unique([t.name for t in tasks], "tasks", problems)
    return tuple(tasks)


def _unique(names: list[str], where: str, problems: _Problems) -> None:
    seen = set()
    for name in names:
        if name in seen:
            problems.add(where, f"the name {name!r} is used twice")
        seen.add(name)


def parse_config(text: str, source: str = "config") -> StudyConfig:
    """Parse and validate a study configuration; ConfigError lists every problem.

    Example:
        >>> config = parse_config(Path("examples/glue-local.toml").read_text())
        >>> [task.name for task in config.tasks]
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
    problems = _Problems()
    _unknown_keys(raw, "(top level)", {"study", "models", "tasks", "pretrain", "finetune",
                                       "importance", "pruning", "analyses", "orders",
                                       "estimators", "sparsity"}, problems)
    study = raw.get("study", {})
    _unknown_keys(study, "study", {"name", "seeds", "device"}, problems)
    name = _value(study, "name", "study", str, "study", problems)
    seeds = study.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.add("study.seeds", f"{seeds!r}; allowed: a non-empty list of integers")
        seeds = [0]
    if len(set(seeds)) != len(seeds):
        problems.add("study.seeds", f"{seeds!r} repeats a seed")
    device = _value(study, "device", "study", str, "auto", problems,
                    check=lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
                    allowed="auto, cpu, cuda, cuda:N")
    models, tasks = _models(raw, problems), _tasks(raw, problems)

    pretrain = _section(raw, "pretrain", PretrainSpec, problems, {
        "text": _reader(str),
        "importance_max_examples": _reader(int, optional=True, **POSITIVE_INT),
        "importance_fraction": _reader(float, optional=True, **FRACTION),
        "curve_max_examples": _reader(int, optional=True, **POSITIVE_INT),
        "curve_fraction": _reader(float, optional=True, **FRACTION),
        "max_length": _reader(int, check=lambda v: v >= 8, allowed="an integer >= 8"),
        "fit_steps": _reader(int, **POSITIVE_INT),
    })
    if not pretrain.text:
        problems.add("pretrain.text", "required: a text file or directory for the masked-LM "
                     "task (e.g. ../shared/data/wikitext-2/wiki.valid.tokens)")
    elif not Path(pretrain.text.removeprefix("mlm:")).exists():
        problems.add("pretrain.text", f"{pretrain.text!r} does not exist")
    finetune = _section(raw, "finetune", FinetuneSpec, problems, {
        "epochs": _reader(float, check=lambda v: v > 0, allowed="a positive number"),
        "lr": _reader(float, check=lambda v: v > 0, allowed="a positive number"),
        "batch_size": _reader(int, **POSITIVE_INT),
        "max_length": _reader(int, check=lambda v: v >= 8, allowed="an integer >= 8"),
        "warmup": _reader(float, check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
        "weight_decay": _reader(float, check=lambda v: v >= 0, allowed="a number >= 0"),
        "max_steps": _reader(int, optional=True, **POSITIVE_INT),
        "train_fraction": _reader(float, optional=True, **FRACTION),
        "train_max_examples": _reader(int, optional=True, **POSITIVE_INT),
    })
    importance = _section(raw, "importance", ImportanceSpec, problems, {
        "split": _reader(str),
        "fraction": _reader(float, optional=True, **FRACTION),
        "max_examples": _reader(int, optional=True, **POSITIVE_INT),
        "batch_size": _reader(int, **POSITIVE_INT),
    })
    normalizations = raw.get("importance", {}).get("normalizations", list(NORMALIZATIONS))
    if (not isinstance(normalizations, list) or not normalizations
            or any(n not in NORMALIZATIONS for n in normalizations)):
        problems.add("importance.normalizations",
                     f"{normalizations!r}; allowed: a non-empty list of "
                     f"{', '.join(NORMALIZATIONS)}")
        normalizations = list(NORMALIZATIONS)
    importance = ImportanceSpec(**{**importance.__dict__,
                                   "normalizations": tuple(dict.fromkeys(normalizations))})
    pruning = _section(raw, "pruning", PruningSpec, problems, {
        "schedule": _reader(str, check=lambda v: v in SCHEDULES, allowed=", ".join(SCHEDULES)),
        "step": _reader(float, check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]"),
        "keep_one_per_layer": _reader(bool),
        "split": _reader(str),
        "fraction": _reader(float, optional=True, **FRACTION),
        "max_examples": _reader(int, optional=True, **POSITIVE_INT),
        "batch_size": _reader(int, **POSITIVE_INT),
    })
    analyses = _section(raw, "analyses", AnalysesSpec, problems, {
        "recall": _reader(bool),
        "recall_threshold": _reader(float, **FRACTION),
        "drift": _reader(bool),
        "drift_max_examples": _reader(int, optional=True, **POSITIVE_INT),
        "correlation": _reader(bool),
        "pruned_finetune": _reader(float, optional=True, check=lambda v: 0 < v < 1,
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
    orders = _orders(raw, problems)
    estimators = _estimators(raw, problems)
    sparsity = _sparsity(raw, problems)
    if problems.lines:
        count = len(problems.lines)
        raise ConfigError(f"{source}: {count} problem{'s' if count > 1 else ''}:\n  "
                          + "\n  ".join(problems.lines))
    return StudyConfig(name, tuple(seeds), device, models, tasks, pretrain, finetune,
                       importance, pruning, analyses, orders, estimators, sparsity, text)


def _name_list(table: dict, key: str, where: str, allowed: tuple[str, ...], default,
               problems: _Problems) -> tuple[str, ...]:
    values = table.get(key, list(default))
    if (not isinstance(values, list)
            or not all(isinstance(v, str) and v in allowed for v in values)):
        problems.add(f"{where}.{key}", f"{values!r}; allowed: a list of "
                     f"{', '.join(allowed)}")
        return tuple(default)
    return tuple(dict.fromkeys(values))


def _ratio_list(table: dict, key: str, where: str, default, problems: _Problems, *,
                low_open: bool, allowed: str):
    values = table.get(key, None if default is None else list(default))
    if values is None:
        return None
    ok = isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool)
        and (0 < v < 1 if low_open else 0 <= v < 1) for v in values)
    if not ok:
        problems.add(f"{where}.{key}", f"{values!r}; allowed: {allowed}")
        return None if default is None else tuple(default)
    return tuple(sorted({round(float(v), 10) for v in values}))


def _orders(raw: dict, problems: _Problems) -> OrdersSpec:
    from headcount.choices import ORDERS

    table = _table(raw, "orders", OrdersSpec, problems)
    if table is None:
        return OrdersSpec()
    others = tuple(o for o in ORDERS if o != "importance")
    names = _name_list(table, "names", "orders", others, (), problems)
    finetune = _name_list(table, "finetune", "orders", ORDERS, (), problems)
    draws = _value(table, "draws", "orders", int, OrdersSpec.draws, problems, **POSITIVE_INT)
    ratios = _ratio_list(table, "finetune_ratios", "orders", OrdersSpec.finetune_ratios,
                         problems, low_open=True, allowed="a list of ratios in (0, 1)")
    compensation = _value(table, "compensation", "orders", bool, True, problems)
    return OrdersSpec(names, draws, finetune, ratios, compensation)


def _estimators(raw: dict, problems: _Problems) -> EstimatorsSpec:
    from headcount.choices import ESTIMATORS

    table = _table(raw, "estimators", EstimatorsSpec, problems)
    if table is None:
        return EstimatorsSpec()
    others = tuple(e for e in ESTIMATORS if e != "gradient")
    names = _name_list(table, "names", "estimators", others, (), problems)
    max_examples = _value(table, "max_examples", "estimators", int,
                          EstimatorsSpec.max_examples, problems, optional=True, **POSITIVE_INT)
    curves = _value(table, "curves", "estimators", bool, True, problems)
    return EstimatorsSpec(names, max_examples, curves)


def _sparsity(raw: dict, problems: _Problems) -> SparsitySpec:
    from headcount.choices import SCOPES

    table = _table(raw, "sparsity", SparsitySpec, problems)
    if table is None:
        return SparsitySpec()
    allowed = "a list of sparsities in [0, 1)"
    # A [sparsity] section without levels means the default sweep 0, 10%, ..., 90%.
    default = SPARSITY_LEVELS if table else ()
    levels = _ratio_list(table, "levels", "sparsity", default, problems, low_open=False,
                         allowed=allowed)
    finetune_levels = _ratio_list(table, "finetune_levels", "sparsity", None, problems,
                                  low_open=False, allowed=allowed)
    if finetune_levels is not None and not set(finetune_levels) <= set(levels):
        problems.add("sparsity.finetune_levels", f"{list(finetune_levels)} must be among "
                     f"the levels {list(levels)}")
    scope = _value(table, "scope", "sparsity", str, "global", problems,
                   check=lambda v: v in SCOPES, allowed=", ".join(SCOPES))
    after = _value(table, "after_finetune", "sparsity", bool, True, problems)
    return SparsitySpec(tuple(levels), scope, finetune_levels, after)


def load_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    return parse_config(path.read_text(encoding="utf-8"), str(path))
