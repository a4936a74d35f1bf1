"""headcount: measure how much each attention head matters, and lay off the ones that don't.

The public API (no side effects on import beyond loading these modules):

    >>> from headcount import gate_heads, head_importance, normalize, evaluate
"""

__version__ = "0.1.0"

from headcount.arch import SUPPORTED, HeadLayout, head_layout
from headcount.checkpoints import load_pruned, save_pruned
from headcount.compensation import compensation_record, gini
from headcount.data import EncodedData, choose_subset, prepare_data
from headcount.drift import attention_drift
from headcount.errors import (
    ConfigError,
    DataError,
    HeadcountError,
    TaskError,
    UnsupportedModelError,
)
from headcount.estimators import ESTIMATORS, estimate_importance
from headcount.evaluate import Evaluation, evaluate
from headcount.finetune import TrainingConfig, finetune
from headcount.gates import gate_heads
from headcount.importance import NORMALIZATIONS, Importance, head_importance, normalize
from headcount.models import LoadedModel, load_model
from headcount.orders import ORDERS, head_order, order_scores, summarize_draws
from headcount.pipeline import DataOptions, evaluate_job, importance_job
from headcount.pruning import pruning_curve
from headcount.recall import recall_rows
from headcount.removal import remove_heads
from headcount.study import run_study
from headcount.study_config import load_config as load_study_config
from headcount.tasks.registry import Task, resolve_task
from headcount.weight_pruning import (
    apply_masks,
    magnitude_masks,
    masks_fixed,
    sparsity_curve,
    sparsity_report,
)

__all__ = [
    "NORMALIZATIONS",
    "SUPPORTED",
    "ConfigError",
    "DataError",
    "DataOptions",
    "EncodedData",
    "Evaluation",
    "HeadLayout",
    "HeadcountError",
    "Importance",
    "LoadedModel",
    "Task",
    "TaskError",
    "UnsupportedModelError",
    "choose_subset",
    "evaluate",
    "evaluate_job",
    "gate_heads",
    "head_importance",
    "head_layout",
    "importance_job",
    "load_model",
    "normalize",
    "prepare_data",
    "resolve_task",
    "remove_heads",
    "load_pruned",
    "save_pruned",
    "pruning_curve",
    "TrainingConfig",
    "finetune",
    "attention_drift",
    "recall_rows",
    "run_study",
    "load_study_config",
    "ESTIMATORS",
    "estimate_importance",
    "ORDERS",
    "head_order",
    "order_scores",
    "summarize_draws",
    "compensation_record",
    "gini",
    "magnitude_masks",
    "apply_masks",
    "masks_fixed",
    "sparsity_curve",
    "sparsity_report",
]
