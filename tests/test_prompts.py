"""The prompts are byte-identical to STUDY.md's and to the params files'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mmrepr.lvlm import prompts

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT.parent / "shared" / "STUDY.md"


@pytest.fixture(scope="module")
def study_section() -> str:
    if not STUDY.is_file():
        pytest.skip(f"{STUDY} not present")
    text = STUDY.read_text(encoding="utf-8")
    start = text.index("## Structured prompts")
    return text[start:text.index("\n## ", start + 3)]


def fenced_blocks(section: str) -> dict[str, str]:
    """``Name…:`` line followed by a fenced block → {name: block text without the fences}."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)[^\n]*:\n```\n(.*?)\n```$", section, re.M | re.S)}


def test_fitb_prompts_match_study(study_section):
    blocks = fenced_blocks(study_section)
    assert set(blocks) == {"Baby", "Pets", "Clothing", "Allrecipes"}
    for name, block in blocks.items():
        ours = prompts.FITB[name.lower()]
        assert ours.encode("utf-8") == block.encode("utf-8"), name
    assert prompts.CLOTHING.endswith(". ") and "you're" in prompts.CLOTHING
    assert "you’re" in prompts.BABY


def test_descr_and_mis_match_study(study_section):
    flat = " ".join(study_section.split())  # markdown wraps lines; a line break is a space
    assert f"MIS, task-misaligned: `{prompts.MIS}`" in flat
    assert f'DESCR ("…{prompts.DESCR}")' in flat


@pytest.mark.parametrize("dataset", ["baby", "pets", "clothing", "allrecipes"])
def test_params_prompts_match(dataset):
    raw = yaml.safe_load((ROOT / "params" / f"{dataset}.yaml").read_text(encoding="utf-8"))
    assert raw["lvlm"]["prompt"].encode("utf-8") == prompts.fitb_prompt(dataset).encode("utf-8")


def test_unknown_dataset():
    with pytest.raises(KeyError, match="known"):
        prompts.fitb_prompt("garden")
