"""The record every task loader returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labelled input of a downstream task.

    `label` is the canonical class id (int) for GLUE classification tasks, a float for
    regression, and the raw value as written in the file (str, int or float) for local
    files: mapping raw labels onto a model's label ids happens later, when the model is known.
    """

    text: str
    text_pair: str | None = None
    label: int | float | str | None = None
