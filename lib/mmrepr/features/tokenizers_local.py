"""Tokenizers built here, from the item texts, for offline (random-weight) text models.

Without the hub there is no MPNet or CLIP vocabulary, so a WordPiece tokenizer (Hugging
Face ``tokenizers``: BERT normaliser and pre-tokenizer, greedy longest-match WordPiece
model) is built from the catalogue's descriptions: every character, as a word start and as
a ``##`` continuation, plus the most frequent words (ties broken alphabetically). We count
the vocabulary ourselves because the library's WordPiece/BPE trainers break ties between
equally frequent merges in hash-map order, which differs from run to run; this one is
deterministic. The MPNet tokenizer wraps it in ``[CLS] … [SEP]``, the CLIP one in
``<|startoftext|> … <|endoftext|>``.

It is saved once under the features cache and reused, so a later edit of one description
does not change the vocabulary (and so does not invalidate every cached text embedding).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from mmrepr.io import atomic_path

SPECIALS = {
    "wordpiece": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"},
    "clip": {"pad_token": "<|endoftext|>", "unk_token": "[UNK]", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"},
}


def build_wordpiece(texts: Iterable[str], vocab_size: int, kind: Literal["wordpiece", "clip"] = "wordpiece") -> Tokenizer:
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    for text in texts:
        for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            words[w] += 1
            chars.update(w)
    specials = list(dict.fromkeys(SPECIALS[kind].values()))
    by_freq = lambda c: (-c[1], c[0])  # noqa: E731
    alphabet = [c for c, _ in sorted(chars.items(), key=by_freq)]
    base = specials + alphabet + ["##" + c for c in alphabet]
    budget = max(0, vocab_size - len(base))
    frequent = [w for w, _ in sorted(words.items(), key=by_freq) if len(w) > 1][:budget]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(base + frequent))}
    if len(vocab) > vocab_size:  # an alphabet larger than the budget: keep the frequent part
        vocab = {t: i for i, t in enumerate(list(vocab)[:vocab_size])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    if kind == "wordpiece":
        single, first, last = "[CLS] $A [SEP]", "[CLS]", "[SEP]"
    else:
        single, first, last = "<|startoftext|> $A <|endoftext|>", "<|startoftext|>", "<|endoftext|>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(first, vocab[first]), (last, vocab[last])]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def local_tokenizer(
    path: Path, kind: Literal["wordpiece", "clip"], texts: list[str], vocab_size: int, max_length: int
) -> tuple[PreTrainedTokenizerFast, str]:
    """Load the tokenizer saved at ``path`` or build and save it: ``(tokenizer, sha256 of its file)``."""
    path = Path(path)
    if not path.is_file():
        corpus = [t for t in texts if t and t.strip()] or ["empty"]
        tok = build_wordpiece(corpus, vocab_size, kind)
        with atomic_path(path) as tmp:
            tok.save(str(tmp))
    raw = path.read_bytes()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(raw.decode("utf-8")), model_max_length=max_length, **SPECIALS[kind]
    )
    return fast, hashlib.sha256(raw).hexdigest()
