"""Params of stage 5 (``analysis:`` in a profile)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisParams(Strict):
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    metrics: list[str] = Field(default_factory=lambda: ["Recall@20", "nDCG@20", "HR@20"])
    bootstrap: int = Field(1000, ge=0)
    # Lower edges of the user-activity buckets (training interactions per user):
    # [1, 2, 5] -> "1", "2-4", "5+". Content should matter most for sparse users.
    activity_buckets: list[int] = Field(default_factory=lambda: [1, 2, 5])

    @field_validator("activity_buckets")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if not v or v[0] < 1 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must be a non-empty, strictly increasing list of integers >= 1 (got {v})")
        return v
