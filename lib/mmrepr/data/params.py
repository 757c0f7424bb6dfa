"""Params of stage 1 (``data:`` in a profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Strict):
    """The synthetic catalogue: how many users/items and how strongly each modality drives choices."""

    n_users: int = Field(300, ge=10)
    n_items: int = Field(400, ge=10)
    interactions_per_user: float = Field(20.0, gt=1)
    image_size: int = Field(64, ge=8, le=512)
    # Weights of the latent utility: attributes seen only in the image, only in the text,
    # in both, and free collaborative structure (not visible in any content).
    image_weight: float = Field(1.0, ge=0)
    text_weight: float = Field(1.0, ge=0)
    shared_weight: float = Field(1.0, ge=0)
    collab_weight: float = Field(0.5, ge=0)
    temperature: float = Field(0.3, gt=0)
    popularity_skew: float = Field(0.5, ge=0)
    # Share of items published without a description, and (drawn separately) without an
    # image, so the "drop items without image or description" step has something to count.
    missing_fraction: float = Field(0.02, ge=0, le=0.5)
    # Size of the free collaborative factors (in no content).
    collab_dim: int = Field(8, ge=1, le=256)
    # Fewest interactions a user makes (capped at n_items - 1), so a small k-core keeps most users.
    min_interactions: int = Field(5, ge=1)


class ColdItemsParams(Strict):
    """Cold items made on purpose (docs/protocol.md, "Cold items"): after the k-core and the
    split, a seeded random ``fraction`` of the items lose their training interactions, which
    move to test; their validation rows stay in validation. Sources split by us only
    (allrecipes has its own cold items)."""

    fraction: float = Field(0.1, gt=0, lt=1)
    # None: the profile's seed
    seed: int | None = None


class DataParams(Strict):
    source: Literal["synthetic", "amazon2023", "allrecipes"]
    # Amazon Reviews 2023 category, e.g. "Baby_Products".
    category: str | None = None
    k_core: int = Field(5, ge=0)
    # Offline copy of the authors' files (default: ../shared/data when present).
    mirror_dir: Path | None = None
    # Where downloads (raw files, images) are cached; shared between profiles.
    cache_dir: Path = Path("cache")
    # Base URLs, overridable (tests point them at a local server).
    amazon_base_url: str = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw"
    release_base_url: str = (
        "https://raw.githubusercontent.com/matteoattimonelli/"
        "On-the-Importance-of-Item-Representations-in-MMRS/577ef375b19fa4e709322a7527ac924ff735e96e"
    )
    download_images: bool = True
    image_workers: int = Field(16, ge=1)
    # Cap on raw review lines read (None = all); lets a laptop try the real pipeline.
    max_reviews: int | None = Field(None, ge=1)
    synthetic: SyntheticParams | None = None
    # None: no cold items are made (a real split keeps whatever cold items it has)
    cold_items: ColdItemsParams | None = None
