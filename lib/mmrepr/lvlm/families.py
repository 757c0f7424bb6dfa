"""LVLM families: how to load each one, and tiny random-weight stand-ins for offline runs.

Every family is described by a :class:`Family`: the transformers model class, how its
processor is loaded, its end-of-turn tokens and (for the families transformers ships) a
builder of a *tiny* checkpoint — random weights from a minimal config (2 text layers,
hidden 64, a 1-layer vision tower), a byte-level BPE tokenizer trained here with
``tokenizers`` and wrapped with the family's special tokens and chat template, and the
family's processor. The tiny checkpoint is written with ``save_pretrained`` and read back
with ``from_pretrained`` exactly like a downloaded one, so the same code path runs
offline on CPU and on a GPU with the real 2B/7B weights.

Supported: ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``, ``llava``, ``idefics3``,
``smolvlm``, ``gemma3`` (all in transformers); ``phi3_v`` (Phi-3.5-vision) only through
``trust_remote_code`` from its Hub checkpoint — no tiny builder, it cannot be tested offline.

Without torchvision the Qwen-VL and SmolVLM processors cannot build their *video*
processor; :func:`load_processor` then uses a subclass that drops it (images only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# Marker file a tiny checkpoint carries, so every output made from it says "random weights".
TINY_MARKER = "mmrepr_tiny_model.json"


# ---------------------------------------------------------------------------------------
# Chat templates. Each renders a user turn holding one image and the prompt text, then
# the assistant header (add_generation_prompt), like the family's released template.
# ---------------------------------------------------------------------------------------
_QWEN2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL dropped the default system message.
_QWEN3_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS3_TEMPLATE[len("<|begin_of_text|>") :]
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_QWEN_TOKENS = {
    "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"],
    "roles": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
}


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str  # transformers class name (AutoModelForImageTextToText for remote code)
    processor_class: str | None  # transformers processor class (None: AutoProcessor / remote code)
    template: str | None = None
    tokens: dict[str, Any] = field(default_factory=dict)  # special tokens and their roles
    stop_tokens: tuple[str, ...] = ()  # end-of-turn tokens generation stops at
    has_video_processor: bool = False  # needs torchvision; dropped when it is missing
    trust_remote_code: bool = False
    tiny: Callable[..., Any] | None = None  # (tokenizer, size) -> (config, image_processor, processor kwargs)
    paper_ids: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Tiny configs. ``h`` is the text hidden size; everything else is kept as small as the
# architecture allows so a forward pass takes milliseconds on CPU.
# ---------------------------------------------------------------------------------------
def _text_common(tok, h: int, layers: int) -> dict[str, Any]:
    return dict(
        vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
    )


def _mrope_section(h: int) -> list[int]:
    half = (h // 4) // 2  # head_dim / 2 with 4 heads
    a = half // 4
    return [half - 2 * ((half - a) // 2), (half - a) // 2, (half - a) // 2]


def _qwen_image_processor(patch: int, mean=None, std=None):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    kw = {} if mean is None else {"image_mean": mean, "image_std": std}
    # Small images: every picture becomes a 4x4 patch grid -> 4 image tokens after merging.
    side = patch * 4
    return Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": side * side, "longest_edge": side * side}, **kw,
    )


# Architecture sizes of the released Qwen2-VL checkpoints (their config.json), so speed can
# be measured with random weights of the real shape. The vocabulary stays the small local
# one: the LM head is ~7% of a 7B model's per-token FLOPs, so timings are slightly optimistic.
QWEN2_VL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "2b": {"text": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2, max_position_embeddings=32768),
           "vision": dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)},
    "7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, max_position_embeddings=32768),
           "vision": dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)},
}


def _tiny_qwen2_vl(tok, h: int, layers: int, preset: str | None = None):
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_TOKENS["special"]}
    text = _text_common(tok, h, layers) | {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                                "mrope_section": _mrope_section(h)}}
    vision = dict(depth=1, embed_dim=32, hidden_size=h, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    image_processor = _qwen_image_processor(14)
    if preset is not None:
        if preset not in QWEN2_VL_PRESETS:
            raise ValueError(f"unknown qwen2_vl size preset {preset!r}; known: {', '.join(QWEN2_VL_PRESETS)}")
        text |= QWEN2_VL_PRESETS[preset]["text"]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
        vision |= QWEN2_VL_PRESETS[preset]["vision"]
        image_processor = Qwen2VLImageProcessorPil()  # the released defaults: native resolution
    cfg = Qwen2VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return cfg, image_processor, {}


def _tiny_qwen2_5_vl(tok, h: int, layers: int):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_TOKENS["special"]}
    text = _text_common(tok, h, layers) | {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                                "mrope_section": _mrope_section(h)}}
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=h,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return cfg, _qwen_image_processor(14), {}


def _tiny_qwen3_vl(tok, h: int, layers: int):
    from transformers import Qwen3VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_TOKENS["special"]}
    text = _text_common(tok, h, layers) | {
        "head_dim": h // 4,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(h),
                            "mrope_interleaved": True},
    }
    text.pop("bos_token_id"), text.pop("eos_token_id")
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=h,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return cfg, _qwen_image_processor(16, [0.5] * 3, [0.5] * 3), {}


def _tiny_siglip(h_vis: int = 32, image_size: int = 32, patch: int = 8) -> dict[str, Any]:
    return dict(hidden_size=h_vis, intermediate_size=2 * h_vis, num_hidden_layers=1, num_attention_heads=2,
                image_size=image_size, patch_size=patch)


def _tiny_llava(tok, h: int, layers: int):
    from transformers import LlavaConfig
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    image_size, patch = 32, 8
    text = _text_common(tok, h, layers) | {"model_type": "llama"}
    vision = {"model_type": "clip_vision_model", **_tiny_siglip(32, image_size, patch), "projection_dim": 32}
    cfg = LlavaConfig(text_config=text, vision_config=vision, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-1)
    ip = LlavaImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return cfg, ip, {"patch_size": patch, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}


def _tiny_idefics3(tok, h: int, layers: int, cls_name: str = "Idefics3"):
    import transformers

    image_size, patch, scale = 32, 8, 2
    text = _text_common(tok, h, layers) | {"model_type": "llama"}
    cfg = getattr(transformers, f"{cls_name}Config")(
        text_config=text, vision_config=_tiny_siglip(32, image_size, patch), scale_factor=scale,
        image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
    )
    mod = "idefics3" if cls_name == "Idefics3" else "smolvlm"
    ipm = __import__(f"transformers.models.{mod}.image_processing_pil_{mod}", fromlist=["x"])
    ip = getattr(ipm, f"{cls_name}ImageProcessorPil")(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False,
    )
    return cfg, ip, {"image_seq_len": ((image_size // patch) // scale) ** 2}


def _tiny_smolvlm(tok, h: int, layers: int):
    return _tiny_idefics3(tok, h, layers, cls_name="SmolVLM")


def _tiny_gemma3(tok, h: int, layers: int):
    from transformers import Gemma3Config
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image_size, patch, per_image = 32, 8, 4  # 16 patches pooled to 4 soft tokens
    text = _text_common(tok, h, layers) | {"head_dim": h // 4, "query_pre_attn_scalar": h // 4,
                                            "sliding_window": 64, "layer_types": None}
    cfg = Gemma3Config(
        text_config=text, vision_config={"model_type": "siglip_vision_model", **_tiny_siglip(32, image_size, patch)},
        mm_tokens_per_image=per_image, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    ip = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    return cfg, ip, {"image_seq_length": per_image}


_IDEFICS_SPECIAL = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", _QWEN2_TEMPLATE, _QWEN_TOKENS,
               ("<|im_end|>", "<|endoftext|>"), True, tiny=_tiny_qwen2_vl,
               paper_ids=("Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-2B-Instruct")),
        Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", _QWEN2_TEMPLATE,
               _QWEN_TOKENS, ("<|im_end|>", "<|endoftext|>"), True, tiny=_tiny_qwen2_5_vl,
               paper_ids=("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")),
        Family("qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", _QWEN3_TEMPLATE, _QWEN_TOKENS,
               ("<|im_end|>", "<|endoftext|>"), True, tiny=_tiny_qwen3_vl,
               paper_ids=("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct")),
        Family("llava", "LlavaForConditionalGeneration", "LlavaProcessor", _LLAVA_TEMPLATE,
               {"special": ["<s>", "</s>", "<unk>", "<pad>", "<image>"],
                "roles": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
                "extra": {"image_token": "<image>"}},
               ("</s>",), False, tiny=_tiny_llava, paper_ids=("llava-hf/llava-1.5-7b-hf",)),
        Family("idefics3", "Idefics3ForConditionalGeneration", "Idefics3Processor", _IDEFICS3_TEMPLATE,
               {"special": ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", *_IDEFICS_SPECIAL],
                "roles": {"bos_token": "<|begin_of_text|>", "eos_token": "<end_of_utterance>",
                          "pad_token": "<|finetune_right_pad_id|>"}},
               ("<end_of_utterance>", "<|end_of_text|>"), False, tiny=_tiny_idefics3,
               paper_ids=("HuggingFaceM4/Idefics3-8B-Llama3",)),
        Family("smolvlm", "SmolVLMForConditionalGeneration", "SmolVLMProcessor", _SMOLVLM_TEMPLATE,
               {"special": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", *_IDEFICS_SPECIAL],
                "roles": {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|endoftext|>"}},
               ("<end_of_utterance>", "<|im_end|>"), True, tiny=_tiny_smolvlm,
               paper_ids=("HuggingFaceTB/SmolVLM-256M-Instruct",)),
        Family("gemma3", "Gemma3ForConditionalGeneration", "Gemma3Processor", _GEMMA3_TEMPLATE,
               {"special": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                            "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
                "roles": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
                "extra": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                          "image_token": "<image_soft_token>"}},
               ("<end_of_turn>", "<eos>"), False, tiny=_tiny_gemma3, paper_ids=("google/gemma-3-4b-it",)),
        # Phi-3.5-vision ships its modelling code on the Hub: loaded with trust_remote_code, no offline build.
        Family("phi3_v", "AutoModelForCausalLM", None, stop_tokens=("<|end|>", "<|endoftext|>"),
               trust_remote_code=True, paper_ids=("microsoft/Phi-3.5-vision-instruct",)),
    ]
}

TINY_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.tiny is not None)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown LVLM family {name!r}; supported: {', '.join(FAMILIES)}") from None


def torchvision_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


# ---------------------------------------------------------------------------------------
# Processors without the video processor (torchvision missing).
# ---------------------------------------------------------------------------------------
_NO_VIDEO_CACHE: dict[str, type] = {}


def no_video_processor_class(processor_class: str) -> type:
    """A subclass of ``processor_class`` whose ``__init__`` has no ``video_processor``.

    ``ProcessorMixin`` derives the sub-processors it loads and saves from the ``__init__``
    signature (and the kwargs it accepts from ``__init__.__code__``), so the subclass needs a
    real ``__init__`` without the argument; the parent then gets ``None``.
    """
    if processor_class in _NO_VIDEO_CACHE:
        return _NO_VIDEO_CACHE[processor_class]
    import transformers

    base = getattr(transformers, processor_class)
    if processor_class == "SmolVLMProcessor":

        def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None,
                     **kwargs):
            base.__init__(self, image_processor, tokenizer, None, image_seq_len=image_seq_len,
                          chat_template=chat_template, **kwargs)
    else:

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            base.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                          chat_template=chat_template, **kwargs)

    body: dict[str, Any] = {"__init__": __init__, "__module__": __name__}
    if processor_class == "SmolVLMProcessor":
        from transformers.processing_utils import ProcessorMixin

        # SmolVLM's override only adds video frame defaults read from the video processor.
        body["apply_chat_template"] = ProcessorMixin.apply_chat_template
    cls = type(f"{processor_class}NoVideo", (base,), body)
    _NO_VIDEO_CACHE[processor_class] = cls
    return cls


def load_processor(path: str, family: Family, **kwargs: Any):
    """The family's processor from a checkpoint (without its video part if torchvision is missing)."""
    import transformers

    if family.processor_class is None:
        return transformers.AutoProcessor.from_pretrained(path, trust_remote_code=family.trust_remote_code, **kwargs)
    cls = getattr(transformers, family.processor_class)
    if family.has_video_processor and not torchvision_available():
        cls = no_video_processor_class(family.processor_class)
    return cls.from_pretrained(path, **kwargs)


def load_model(path: str, family: Family, dtype=None, attn_implementation: str | None = None, device=None):
    import transformers

    cls = getattr(transformers, family.model_class)
    kwargs: dict[str, Any] = {"trust_remote_code": family.trust_remote_code} if family.trust_remote_code else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = cls.from_pretrained(path, **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval()


def is_tiny_checkpoint(path: str | Path) -> bool:
    return (Path(path) / TINY_MARKER).is_file()


# ---------------------------------------------------------------------------------------
# Tiny checkpoints
# ---------------------------------------------------------------------------------------
_CORPUS = """
Imagine you're creating metadata for an image database of products. Your task is to select five keywords
that best represent the image content. Fill in the blanks: [Category], [Color], [Pattern], [Material], [Style].
For example, your answer will be: [Category] {Mug}, [Color] {Red}, [Pattern] {Striped}, [Material] {Ceramic},
[Style] {Modern}. [Age Group] {Infant} [Purpose] {Hygiene} [Usage Context] {Home} [Type] {dress} [Wear Location]
{torso} [Pet Type] {Dog} [Dish Type] {Pasta} [Cuisine] {Italian} [Primary Ingredient] {Cheese} [Flavor Profile]
{Savory} [Meal Type] {Dinner}. You are a helpful assistant. user assistant system model User Assistant USER ASSISTANT
Blue Green Yellow Black White Orange Purple Pink Grey Brown plastic cotton wood metal glass rubber silicone
toy bowl shirt shoe bottle blanket collar leash casual formal vintage outdoor indoor kitchen solid floral
"""


def train_tokenizer(family: Family, vocab_size: int = 384, extra_text: str = ""):
    """A byte-level BPE tokenizer trained on a small fixed corpus, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = list(family.tokens["special"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS, extra_text], trainer=trainer)
    roles = dict(family.tokens["roles"])
    extra = dict(family.tokens.get("extra", {}))
    named_extra = [t for t in special if t not in roles.values()]
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, **roles, extra_special_tokens=extra or named_extra,
        chat_template=family.template, padding_side="left", model_max_length=2048,
    )
    if extra:  # named extras (image_token, boi_token...) replace the list: add the rest as plain special tokens
        wrapped.add_special_tokens({"extra_special_tokens": named_extra}, replace_extra_special_tokens=False)
    return wrapped


def make_tiny(
    family: str,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 384,
    extra_text: str = "",
    preset: str | None = None,
    dtype=None,
    device=None,
):
    """A tiny random-weight ``(model, processor)`` of ``family`` in memory (see :func:`build_tiny_model`).

    ``preset`` (qwen2_vl only: ``"2b"``/``"7b"``) gives the released architecture sizes
    instead, still with random weights, for speed measurements.
    """
    import torch
    import transformers

    fam = get_family(family)
    if fam.tiny is None:
        raise ValueError(f"family {family!r} has no offline tiny build (it needs trust_remote_code from the Hub)")
    tok = train_tokenizer(fam, vocab_size=vocab_size, extra_text=extra_text)
    extra = {"preset": preset} if preset is not None else {}
    if preset is not None and family != "qwen2_vl":
        raise ValueError(f"size presets exist for qwen2_vl only, not {family!r}")
    config, image_processor, proc_kwargs = fam.tiny(tok, hidden_size, num_layers, **extra)
    torch.manual_seed(seed)
    cls = getattr(transformers, fam.model_class)
    if device is not None or dtype is not None:
        # Build the (possibly billions of) random weights directly where they will run.
        default_dtype = torch.get_default_dtype()
        if dtype is not None:
            torch.set_default_dtype(dtype)
        try:
            with torch.device(device or "cpu"):
                model = cls(config)
        finally:
            torch.set_default_dtype(default_dtype)
    else:
        model = cls(config)
    model.eval()
    stop_ids = [tok.convert_tokens_to_ids(t) for t in fam.stop_tokens]
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=stop_ids, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, do_sample=False,
    )
    proc_cls = getattr(transformers, fam.processor_class)
    if fam.has_video_processor and not torchvision_available():
        proc_cls = no_video_processor_class(fam.processor_class)
    processor = proc_cls(image_processor=image_processor, tokenizer=tok, chat_template=fam.template, **proc_kwargs)
    return model, processor


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 384,
    extra_text: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a tiny random-weight checkpoint of ``family`` to ``out_dir`` and return it.

    Model, tokenizer and processor are saved with ``save_pretrained``; load them with
    :func:`load_model` / :func:`load_processor` (or plain ``from_pretrained``). The folder
    carries :data:`TINY_MARKER` so outputs made from it are labelled random-weight. An
    existing tiny checkpoint is reused unless ``overwrite``.
    """
    import shutil

    import transformers

    from mmrepr.io import write_json

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        if is_tiny_checkpoint(out):
            return out
        raise FileExistsError(f"{out} exists and is not a tiny checkpoint; refusing to overwrite")
    model, processor = make_tiny(family, seed, hidden_size=hidden_size, num_layers=num_layers,
                                 vocab_size=vocab_size, extra_text=extra_text)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _fix_processor_class(tmp, get_family(family))
    write_json(tmp / TINY_MARKER, {
        "family": family, "seed": seed, "random_weights": True, "hidden_size": hidden_size,
        "num_layers": num_layers, "vocab_size": len(processor.tokenizer), "transformers": transformers.__version__,
    })
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # the whole folder appears at once: a killed build never looks finished
    log.info("built tiny random-weight %s model at %s", family, out)
    return out


def _fix_processor_class(folder: Path, fam: Family) -> None:
    """Record the real processor class (not our no-video subclass) so AutoProcessor can read it."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        p = folder / name
        if not p.is_file():
            continue
        data = json.loads(p.read_text(encoding="utf-8"))
        if str(data.get("processor_class", "")).endswith("NoVideo"):
            data["processor_class"] = fam.processor_class
            p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
