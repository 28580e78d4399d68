"""Bone reconstructions under any vendor's naming: the shipped kernel table, description words, image noise."""
from __future__ import annotations

import numpy as np
import pytest

from cfbrain.convert.bone import (BONE_NOISE_MAX_HU, DEFAULT_DESCRIPTION_WORDS, SHIPPED_KERNEL_TABLE, KernelTable,
                                  bone_description_word, brain_tissue_noise_hu, noise_verdict)

SHIPPED = KernelTable.load()
VENDORS = {"siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS", "philips": "Philips", "canon": "Canon Medical Systems",
           "toshiba": "TOSHIBA"}
KERNELS = {  # vendor: (soft-tissue kernels, bone kernels)
    "siemens": (["H30s", "H31s", "H40s", "H10s", "H48f", "J30s", "J37s", "J45s", "Hr32", "Hr38", "Hr38\\3", "Hr44",
                 "Br32", "Br36", "Br44", "B30f", "Qr36", "Qr40", "Qr44", "I30f"],
                ["H60s", "H70h", "H80s", "J70h", "Hr60", "Hr64", "Hr68", "Br60", "Br64", "B70f", "Qr60", "Qr69",
                 "U90u"]),
    "ge": (["STANDARD", "SOFT", "DETAIL", "HD STANDARD"], ["BONE", "BONEPLUS", "EDGE", "LUNG", "HD BONE"]),
    "philips": (["A", "B", "C", "UA", "UB", "UC", "YA", "YB"], ["D", "E", "L", "YC", "YD", "YE"]),
    "canon": (["FC21", "FC26", "FC64", "FC03"], ["FC30", "FC35", "FC81", "FC52"]),
    "toshiba": (["FC21", "FC26"], ["FC30", "FC81"]),
}


@pytest.mark.parametrize("vendor", sorted(KERNELS))
def test_each_vendors_kernels_classify_as_soft_or_bone(vendor):
    soft, bone = KERNELS[vendor]
    manufacturer = VENDORS[vendor]
    assert {k: SHIPPED.kernel_class(k, manufacturer) for k in soft} == {k: "soft" for k in soft}
    assert {k: SHIPPED.kernel_class(k, manufacturer) for k in bone} == {k: "bone" for k in bone}


def test_medium_and_foreign_kernels_are_left_to_the_image_check():
    assert SHIPPED.kernel_class("H55s", "SIEMENS") == "unknown"     # medium sharp: neither
    assert SHIPPED.kernel_class("D", "SIEMENS") == "unknown"        # a Philips name on another vendor's scanner
    assert SHIPPED.kernel_class("D", "") == "bone"                  # no Manufacturer: every vendor's rows apply
    assert SHIPPED.kernel_class("Sharp Bone X", "ACME CT") == "bone"
    assert SHIPPED.kernel_class("XR-7", "ACME CT") == SHIPPED.kernel_class("", "SIEMENS") == "unknown"


def test_a_users_kernel_table_extends_the_shipped_one(tmp_path):
    table = tmp_path / "kernels.tsv"
    shipped_rows = SHIPPED_KERNEL_TABLE.read_text().split("\n", 1)[1]
    table.write_text("vendor\tpattern\tclass\tnote\nacme\tXR-[7-9]\tbone\tACME sharp\n" + shipped_rows)
    extended = KernelTable.load(table)
    assert extended.kernel_class("XR-7", "ACME CT") == "bone" and extended.kernel_class("H30s", "SIEMENS") == "soft"
    table.write_text("vendor\tpattern\tclass\tnote\nacme\tXR-7\thard\tbad class\n")
    with pytest.raises(ValueError, match="line 2: class must be one of"):
        KernelTable.load(table)
    table.write_text("vendor\tpattern\tclass\tnote\nacme\tXR-(7\tbone\tbad pattern\n")
    with pytest.raises(ValueError, match="line 2"):
        KernelTable.load(table)


@pytest.mark.parametrize("description, word", [
    ("BONE BRAIN", "BONE"), ("Head Bone", "BONE"), ("KNOCHENFENSTER", "KNOCHENFENSTER"), ("Crâne os", "OS"),
    ("BRAIN", ""), ("POST FOSSA", ""), ("Base Skull", ""), ("ROUTINE HEAD 5mm", ""), ("BONEY", ""), ("", ""),
])
def test_description_words_match_whole_words_only(description, word):
    assert bone_description_word(description, DEFAULT_DESCRIPTION_WORDS) == word


def _head(noise_hu: float, seed: int = 0, shape=(96, 96, 12)) -> np.ndarray:
    """(X, Y, slices) HU: 35 HU brain inside a 1000 HU skull ring in air, plus white noise."""
    radius = np.hypot(*np.mgrid[:shape[0], :shape[1]] - (np.array(shape[:2])[:, None, None] - 1) / 2) / (shape[0] / 2)
    hu = np.select([radius < 0.75, radius < 0.9], [35.0, 1000.0], -1000.0)[:, :, None] * np.ones(shape[2])
    return np.round(hu + np.random.default_rng(seed).normal(0, noise_hu, shape))


def test_noise_separates_soft_from_bone_kernels_at_the_default_threshold():
    soft = [brain_tissue_noise_hu(_head(s)) for s in (3, 5, 8)]
    bone = [brain_tissue_noise_hu(_head(s)) for s in (20, 40, 150)]
    assert max(soft) < BONE_NOISE_MAX_HU < min(bone)
    assert bone[-1] > 100  # the sharpest series still has brain tissue to measure


def test_anatomy_is_not_counted_as_noise():
    """Grey (40 HU) and white (25 HU) matter in 8-voxel blocks: only the 3 HU noise is measured."""
    head = _head(3)
    blocks = (np.indices(head.shape[:2]) // 8).sum(axis=0) % 2 == 0
    head[(head > 0) & (head < 100) & blocks[:, :, None]] += 5
    head[(head > 0) & (head < 100) & ~blocks[:, :, None]] -= 10
    assert brain_tissue_noise_hu(head) < 4


def test_noise_verdict_excludes_above_the_threshold_with_the_value():
    assert noise_verdict(25.04, 12.0) == ("bone_noise", "brain-tissue noise 25.0 HU > 12 HU (bone-kernel-like)")
    assert noise_verdict(3.0, 12.0) == ("", "brain-tissue noise 3.0 HU")
    assert brain_tissue_noise_hu(np.full((64, 64, 5), -1000.0)) is None  # no brain tissue: not measured
    assert noise_verdict(None, 12.0)[0] == ""
