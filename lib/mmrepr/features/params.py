"""Params of stage 2 (``features:`` in a profile)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlSpec(Strict):
    """A control feature set: noise with a reference set's shape/moments, or its rows shuffled.

    With ``role`` (``visual`` or ``textual``) it is a *modality ablation*: only that role is
    replaced (``zeros``, or noise/shuffled as above) and the other roles keep the reference's
    real rows, so a model's drop tells which modality it uses."""

    kind: Literal["noise_gaussian", "noise_mvn", "shuffled", "zeros"]
    reference: str  # name of the feature set it mimics
    role: Literal["visual", "textual"] | None = None
    name: str | None = None  # defaults to f"{kind}_{reference}", or f"{kind}_{role}_{reference}"

    @model_validator(mode="after")
    def _zeros_need_a_role(self) -> "ControlSpec":
        if self.kind == "zeros" and self.role is None:
            raise ValueError("kind 'zeros' replaces one modality: give role: visual or role: textual")
        return self


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
