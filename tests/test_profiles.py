"""The Slurm profile names real rules and sends every GPU rule to the GPU partition."""
from __future__ import annotations

import re

import yaml

from conftest import REPO


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} over workflow/rules/*.smk."""
    blocks = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for match in re.finditer(r"^(?:checkpoint|rule) (\w+):\n(.*?)(?=^\S|\Z)", path.read_text(), re.M | re.S):
            blocks[match.group(1)] = match.group(2)
    return blocks


def test_slurm_profile_resources_name_existing_rules_and_cover_every_gpu_rule():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    blocks = rule_blocks()
    configured = set(profile["set-resources"])
    assert configured <= set(blocks), f"profile names rules that do not exist: {configured - set(blocks)}"
    gpu_rules = {name for name, text in blocks.items() if re.search(r"^\s+gpu=1,", text, re.M)}
    assert {"train_classifier", "train_ddpm", "mededit_run"} <= gpu_rules
    assert gpu_rules <= {name for name in configured if profile["set-resources"][name].get("gpu")}
