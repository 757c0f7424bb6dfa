"""Tokenizers trained here, on the item texts, for offline (random-weight) text models.

Without the hub there is no MPNet or CLIP vocabulary; a tokenizer of the same kind
(WordPiece for MPNet, byte-level BPE for CLIP) is trained with Hugging Face ``tokenizers``
on the catalogue's descriptions. It is saved once under the features cache and reused, so
a later edit of one description does not change the vocabulary (and so does not
invalidate every cached text embedding).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from mmrepr.io import atomic_path

WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
BPE_SPECIALS = {"pad": "<|endoftext|>", "unk": "<|endoftext|>", "bos": "<|startoftext|>", "eos": "<|endoftext|>"}


def _train_wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS.values()), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def local_tokenizer(
    path: Path, kind: Literal["wordpiece", "bpe"], texts: list[str], vocab_size: int, max_length: int
) -> tuple[PreTrainedTokenizerFast, str]:
    """Load the tokenizer saved at ``path`` or train and save it: ``(tokenizer, sha256 of its file)``."""
    path = Path(path)
    if not path.is_file():
        corpus = [t for t in texts if t and t.strip()] or ["empty"]
        tok = _train_wordpiece(corpus, vocab_size) if kind == "wordpiece" else _train_bpe(corpus, vocab_size)
        with atomic_path(path) as tmp:
            tok.save(str(tmp))
    raw = path.read_bytes()
    specials = WORDPIECE_SPECIALS if kind == "wordpiece" else BPE_SPECIALS
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(raw.decode("utf-8")),
        model_max_length=max_length,
        **{f"{k}_token": v for k, v in specials.items()},
    )
    return fast, hashlib.sha256(raw).hexdigest()
