"""The one exception preprocessing raises for a data problem (as opposed to a bug)."""
from __future__ import annotations

import zlib

import nibabel as nib

UNREADABLE_FILE_ERRORS = (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error)
"""What nibabel raises for a missing, truncated or corrupt image file: a data problem ("unreadable")."""


class UnusableScan(ValueError):
    """A scan that cannot be preprocessed for a reason in the data, not in the code.

    Per-scan rules catch it and write an exclusion row (architecture contract 1)
    with ``reason`` (a short snake_case code) and ``detail`` (free text).
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
