"""headcount: measure how much each attention head matters, and lay off the ones that don't.

The public API, in groups. Names load on first use (PEP 562), so `import headcount` and
`headcount --help` import neither torch nor transformers.

    >>> from headcount import gate_heads, head_importance, normalize, evaluate
"""

from __future__ import annotations

import importlib

from headcount.version import __version__

# name -> module that defines it, grouped as a reader looks for them.
_GROUPS: dict[str, dict[str, str]] = {
    "errors": {
        "HeadcountError": "headcount.errors",
        "ConfigError": "headcount.errors",
        "DataError": "headcount.errors",
        "TaskError": "headcount.errors",
        "UnsupportedModelError": "headcount.errors",
    },
    "models and data": {
        "SUPPORTED": "headcount.arch",
        "supported_families": "headcount.arch",
        "Family": "headcount.families",
        "register_family": "headcount.arch",
        "unregister_family": "headcount.arch",
        "HeadLayout": "headcount.layouts",
        "head_layout": "headcount.layouts",
        "LoadedModel": "headcount.models",
        "load_model": "headcount.models",
        "Task": "headcount.tasks.registry",
        "resolve_task": "headcount.tasks.registry",
        "EncodedData": "headcount.data",
        "choose_subset": "headcount.data",
        "prepare_data": "headcount.data",
    },
    "gates, importance and evaluation": {
        "gate_heads": "headcount.gates",
        "NORMALIZATIONS": "headcount.choices",
        "Importance": "headcount.importance",
        "head_importance": "headcount.importance",
        "normalize": "headcount.importance",
        "ESTIMATORS": "headcount.choices",
        "estimate_importance": "headcount.estimators",
        "Evaluation": "headcount.evaluation",
        "evaluate": "headcount.evaluation",
        "BatchBackoff": "headcount.backoff",
    },
    "pruning": {
        "remove_heads": "headcount.removal",
        "load_pruned": "headcount.checkpoints",
        "save_pruned": "headcount.checkpoints",
        "pruning_curve": "headcount.pruning",
        "ORDERS": "headcount.choices",
        "head_order": "headcount.orders",
        "order_scores": "headcount.orders",
        "summarize_draws": "headcount.orders",
        "magnitude_masks": "headcount.weight_pruning",
        "apply_masks": "headcount.weight_pruning",
        "masks_fixed": "headcount.weight_pruning",
        "sparsity_curve": "headcount.weight_pruning",
        "sparsity_report": "headcount.weight_pruning",
    },
    "fine-tuning and analyses": {
        "TrainingConfig": "headcount.training",
        "finetune": "headcount.training",
        "attention_drift": "headcount.drift",
        "recall_rows": "headcount.recall",
        "compensation_record": "headcount.compensation",
        "gini": "headcount.compensation",
    },
    "jobs (a model name and options in, a record out)": {
        "DataOptions": "headcount.jobs.prepared",
        "importance_job": "headcount.jobs.measure",
        "evaluate_job": "headcount.jobs.measure",
    },
    "the study and its report": {
        "load_study_config": "headcount.study.config:load_config",
        "run_study": "headcount.report.run",
    },
}
_EXPORTS = {name: home for group in _GROUPS.values() for name, home in group.items()}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    home = _EXPORTS.get(name)
    if home is None:
        raise AttributeError(f"module 'headcount' has no attribute {name!r}")
    module_name, _, attribute = home.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
