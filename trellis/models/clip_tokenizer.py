"""CLIP's byte-level BPE tokenizer, read from a Hugging Face model folder (offline), 77 tokens per prompt.

The text pipelines tokenize with `max_length=77, padding='max_length', truncation=True` (text facts §3):
<|startoftext|>, at most 75 prompt tokens, <|endoftext|>, then the pad token up to 77. The BPE itself is
the `tokenizers` library (Apache-2.0), the same engine the reference's AutoTokenizer runs, so ids are
identical. `tokenizer.json` is used when present; otherwise the tokenizer is assembled from `vocab.json` +
`merges.txt` with CLIP's published settings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..core.inputfile import MAX_CONFIG_BYTES, open_regular, read_json_file

CONTEXT_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer split (published in its tokenizer.json): contractions, letter runs, single digits,
# runs of other non-space characters.
SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def build_clip_tokenizer(vocab_file: str, merges_file: str):
    """A `tokenizers.Tokenizer` with CLIP's normaliser, pre-tokenizer, BPE and BOS/EOS post-processing."""
    from tokenizers import Tokenizer, models

    bpe = models.BPE.from_file(vocab_file, merges_file, unk_token=EOS, continuing_subword_prefix="",
                               end_of_word_suffix="</w>", fuse_unk=False)
    tok = Tokenizer(bpe)
    configure_clip_pipeline(tok)
    return tok


def configure_clip_pipeline(tok) -> None:
    """Set CLIP's normaliser, pre-tokenizer, post-processor and decoder on a BPE tokenizer."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.post_processor = processors.RobertaProcessing((EOS, tok.token_to_id(EOS)), (BOS, tok.token_to_id(BOS)),
                                                      trim_offsets=False, add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()


def _pad_token(folder: str) -> str:
    """The pad token the folder's tokenizer config names (openai's CLIP: <|endoftext|>; some ports: '!')."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            config = read_json_file(path, MAX_CONFIG_BYTES, what="a tokenizer's config")
            pad = config.get("pad_token") if isinstance(config, dict) else None
            if isinstance(pad, dict):
                pad = pad.get("content")
            if pad:
                return pad
    return EOS


@dataclass
class TokenizedPrompts:
    input_ids: torch.Tensor        # int64 [B, 77]
    truncated: list                # per prompt: True when tokens past the 77th were dropped


class ClipTokenizer:
    def __init__(self, tokenizer, pad_token: str = EOS, context_length: int = CONTEXT_LENGTH):
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None or tokenizer.token_to_id(BOS) is None or tokenizer.token_to_id(EOS) is None:
            raise ValueError(f"the tokenizer lacks CLIP's special tokens ({BOS}, {EOS}, pad {pad_token!r})")
        self.tokenizer = tokenizer
        self.context_length = context_length
        tokenizer.enable_truncation(context_length)
        tokenizer.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad_token)

    @classmethod
    def from_folder(cls, folder: str) -> "ClipTokenizer":
        from tokenizers import Tokenizer

        path = os.path.join(folder, "tokenizer.json")
        vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        if os.path.exists(path):
            open_regular(path).close()          # a FIFO or a device is refused here, not waited on by the reader
            tok = Tokenizer.from_file(path)
        elif os.path.exists(vocab) and os.path.exists(merges):
            for name in (vocab, merges):
                open_regular(name).close()
            tok = build_clip_tokenizer(vocab, merges)
        else:
            raise FileNotFoundError(f"{folder} has no CLIP tokenizer: expected tokenizer.json, or vocab.json and "
                                    f"merges.txt")
        return cls(tok, _pad_token(folder))

    def __call__(self, prompts: list[str]) -> TokenizedPrompts:
        if isinstance(prompts, str):
            prompts = [prompts]
        encodings = self.tokenizer.encode_batch(list(prompts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
        return TokenizedPrompts(ids, [bool(e.overflowing) for e in encodings])
