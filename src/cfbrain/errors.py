"""Errors that describe the user's data, not a bug: the workflow reports them in one line, without a traceback."""
from __future__ import annotations


class InsufficientData(RuntimeError):
    """A stage cannot run on what the earlier stages kept (e.g. no scan in a training split).

    The message names the dataset, what is missing and where to look (the exclusion table)."""


def require_rows(n_rows: int, minimum: int, dataset: str, what: str) -> None:
    """Raise :class:`InsufficientData` when ``n_rows`` < ``minimum``; ``what`` names the rows (e.g.
    "scans in the training split of seed 0")."""
    if n_rows < minimum:
        raise InsufficientData(
            f"dataset {dataset}: {n_rows} {what}, at least {minimum} needed (the dataset's tables/exclusions.md "
            f"says why each input series was excluded)")
