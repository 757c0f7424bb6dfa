"""Params of stage 5 (``analysis:`` in a profile)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisParams(Strict):
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    metrics: list[str] = Field(default_factory=lambda: ["Recall@20", "nDCG@20", "HR@20"])
    bootstrap: int = Field(1000, ge=0)
