"""Params of stage 3 (``lvlm:`` in a profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmrepr.features.params import ControlSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordedAnswers(Strict):
    """An existing answers file (authors' format) used instead of running a model."""

    name: str  # e.g. "qwen2vl-7b__fitb"
    path: Path  # relative to data.mirror_dir when not absolute
    prompt_style: Literal["fitb", "descr", "mis"] = "fitb"


class GenerationModel(Strict):
    name: str  # feature-set name, e.g. "qwen2vl"
    model_id: str  # HF id, or a local folder (tiny random models for offline runs)
    family: str = "qwen2_vl"
    random_weights: bool = False


class KeywordParams(Strict):
    lemmatizer: Literal["simplemma", "none"] = "simplemma"
    encoder: str = "all-MiniLM-L6-v2"
    distance_threshold: float = Field(0.45, gt=0)
    top_k: int = Field(50, ge=1)


class LvlmParams(Strict):
    source: Literal["model", "recorded", "none"] = "none"
    prompt: str | None = None  # the dataset's exact FITB prompt
    models: list[GenerationModel] = Field(default_factory=list)
    recorded: list[RecordedAnswers] = Field(default_factory=list)
    embedding_layer: int = -1
    embedding_position: Literal["answer_eos", "prompt_last", "answer_mean"] = "answer_eos"
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1)
    chunk_size: int = Field(64, ge=1)
    keywords: KeywordParams = KeywordParams()
    # Noise/shuffled controls whose reference is a feature set made in this stage.
    controls: list[ControlSpec] = Field(default_factory=list)
