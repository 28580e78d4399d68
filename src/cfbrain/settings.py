"""Config sections -> frozen dataclasses of settings."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping, what: str) -> T:
    """``cls(**values)`` with YAML lists turned into tuples; unknown keys are an error naming ``what``."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} options: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
