"""The package's public API: every name it lists loads, lazily."""

from __future__ import annotations

import headcount


def test_every_public_name_loads():
    missing = []
    for name in headcount.__all__:
        try:
            getattr(headcount, name)
        except (AttributeError, ImportError) as error:
            missing.append(f"{name}: {error}")
    assert not missing


def test_an_unknown_name_is_an_attribute_error():
    try:
        headcount.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("headcount.no_such_name did not raise")
