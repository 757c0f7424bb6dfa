"""Params of stage 2 (``features:`` in a profile)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlSpec(Strict):
    """A control feature set: noise with a reference set's shape/moments, or its rows shuffled."""

    kind: Literal["noise_gaussian", "noise_mvn", "shuffled"]
    reference: str  # name of the feature set it mimics
    name: str | None = None  # defaults to f"{kind}_{reference}"


class FeaturesParams(Strict):
    # Feature sets to build, by registry name (e.g. r50, vit, r50_sbert, clip, minilm, colour).
    sets: list[str] = Field(default_factory=list)
    # Load real weights from the hub (True) or build the same architecture with seeded
    # random weights from its config (False: offline; outputs are labelled as such).
    pretrained: bool = False
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    chunk_size: int = Field(256, ge=1)
    missing_policy: Literal["drop", "mean", "zeros"] = "zeros"
    controls: list[ControlSpec] = Field(default_factory=list)
