"""Reading a study config's TOML values: each value checked for its type and range, every
problem collected (not raised) so that a config's problems are reported together, each
naming its key and what is allowed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields

from headcount.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # model and task names name folders
POSITIVE_INT = dict(check=lambda v: v >= 1, allowed="an integer >= 1")
FRACTION = dict(check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]")
# A reader's answer for a key that is absent or wrong: the spec's default stays.
KEEP = object()


class Problems:
    """Collects every configuration problem, so that all are reported together."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")

    def raise_any(self, source: str) -> None:
        """ConfigError listing every problem, if there are any."""
        if self.lines:
            count = len(self.lines)
            raise ConfigError(f"{source}: {count} problem{'s' if count > 1 else ''}:\n  "
                              + "\n  ".join(self.lines))


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


@dataclass(frozen=True)
class Rule:
    """What a value must be: of `kind` ("none" too where `optional`), passing `check`;
    `allowed` says so in a problem."""

    kind: type
    optional: bool = False
    check: Callable | None = None
    allowed: str = ""


def value(table: dict, key: str, where: str, rule: Rule, default, problems: Problems):
    """Read `key` of `table` by `rule`; record a problem (and return the default) if it is
    the wrong type or fails the rule's check."""
    if key not in table:
        return default
    found = table[key]
    if found is None or (rule.optional and found == "none"):
        return None if rule.optional else default
    kind = rule.kind
    if kind is float and isinstance(found, int) and not isinstance(found, bool):
        found = float(found)
    if not isinstance(found, kind) or (kind is int and isinstance(found, bool)):
        problems.add(f"{where}.{key}", f"{found!r} is not {_type_name(kind)}"
                     + (f"; allowed: {rule.allowed}" if rule.allowed else ""))
        return default
    if rule.check is not None and not rule.check(found):
        problems.add(f"{where}.{key}", f"{found!r} is not allowed; allowed: {rule.allowed}")
        return default
    return found


def reader(kind, **rule):
    """A reader of one key for `section`: `value` by `Rule(kind, **rule)`, KEEP when the
    key is absent or wrong."""
    def read(table, key, where, problems):
        if key not in table:
            return KEEP
        return value(table, key, where, Rule(kind, **rule), KEEP, problems)

    return read


def unknown_keys(table: dict, where: str, allowed: set[str], problems: Problems) -> None:
    for key in table:
        if key not in allowed:
            problems.add(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def table_of(raw: dict, name: str, spec_class, problems: Problems) -> dict | None:
    """Section `name` of the config ({} when absent) with its unknown keys reported, or
    None (a problem recorded) when it is not a table."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        problems.add(name, f"must be a table ([{name}])")
        return None
    unknown_keys(table, name, {f.name for f in fields(spec_class)}, problems)
    return table


def section(raw: dict, name: str, spec_class, problems: Problems, readers: dict):
    """Section `name` read into `spec_class` by one reader per key (the keys a reader does
    not give keep the spec's defaults)."""
    table = table_of(raw, name, spec_class, problems)
    if table is None:
        return spec_class()
    values = {key: read(table, key, name, problems) for key, read in readers.items()}
    return spec_class(**{k: v for k, v in values.items() if v is not KEEP})


def names(allowed: tuple[str, ...]):
    """A reader for `section` of a list of names out of `allowed` (repeats dropped)."""
    def read(table, key, where, problems):
        if key not in table:
            return KEEP
        values = table[key]
        if (not isinstance(values, list)
                or not all(isinstance(v, str) and v in allowed for v in values)):
            problems.add(f"{where}.{key}", f"{values!r}; allowed: a list of "
                         f"{', '.join(allowed)}")
            return KEEP
        return tuple(dict.fromkeys(values))

    return read


def ratios(*, low_open: bool, allowed: str):
    """A reader for `section` of a list of ratios (`ratio_list`)."""
    def read(table, key, where, problems):
        if key not in table:
            return KEEP
        found = ratio_list(table, key, where, None, problems, low_open=low_open,
                           allowed=allowed)
        return KEEP if found is None else found

    return read


def ratio_list(table: dict, key: str, where: str, default, problems: Problems, *,
               low_open: bool, allowed: str):
    """`key` of `table` (`default` when absent or wrong): a sorted list of distinct ratios in
    (0, 1) if `low_open`, else [0, 1)."""
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


def unique(names: list[str], where: str, problems: Problems) -> None:
    seen = set()
    for name in names:
        if name in seen:
            problems.add(where, f"the name {name!r} is used twice")
        seen.add(name)
