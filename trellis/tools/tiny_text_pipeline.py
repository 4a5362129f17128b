"""Write a tiny random-weight TEXT pipeline in the published layout, beside what it references.

    python -m trellis.tools.tiny_pipeline --text OUT_DIR [--seed N]

OUT_DIR is laid out like a models folder (the app's model cache, or a user's downloads):

    OUT_DIR/TRELLIS-text-tiny/          pipeline.json + ckpts/ (the two text flows, as the text repos ship)
    OUT_DIR/TRELLIS-image-large/        a tiny image pipeline: the decoders the text pipeline.json names as
                                        "JeffreyXiang/TRELLIS-image-large/ckpts/<stem>"
    OUT_DIR/clip-vit-large-patch14/     a tiny CLIP (config.json, model.safetensors with both towers' key
                                        layout for the text part) + a BPE tokenizer trained here

The text pipeline.json names its text encoder "openai/clip-vit-large-patch14", as the published ones do.
Nothing is downloaded.
"""
from __future__ import annotations

import json
import os

import torch

from .tiny_pipeline import COND_CHANNELS, CONFIGS, SAMPLER, SLAT_MEAN, SLAT_STD, randomise, save_model, write_tiny_pipeline

TEXT_DIR, IMAGE_DIR, CLIP_DIR = "TRELLIS-text-tiny", "TRELLIS-image-large", "clip-vit-large-patch14"
IMAGE_REPO = "JeffreyXiang/TRELLIS-image-large"
CLIP_REPO = "openai/clip-vit-large-patch14"

TEXT_FLOWS = {
    "sparse_structure_flow_model": ("ss_flow_txt_dit_tiny_fp16", "SparseStructureFlowModel",
                                    {**CONFIGS["sparse_structure_flow_model"][2], "qk_rms_norm_cross": True}),
    "slat_flow_model": ("slat_flow_txt_dit_tiny_fp16", "ElasticSLatFlowModel", CONFIGS["slat_flow_model"][2]),
}
DECODERS = ("sparse_structure_decoder", "slat_decoder_gs", "slat_decoder_rf", "slat_decoder_mesh")

# A CLIP text config at toy size; width = the flows' cond_channels.
CLIP_TEXT_CONFIG = dict(vocab_size=None, hidden_size=COND_CHANNELS, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                        layer_norm_eps=1e-5)
TOKENIZER_VOCAB = 700
CORPUS = [
    "a red wooden chair with four legs", "a small blue ceramic vase", "an old leather armchair",
    "a futuristic silver spaceship", "a cute cartoon cat sitting", "a stone castle tower with a flag",
    "a green potted plant on a table", "a yellow rubber duck", "a medieval sword and shield",
    "a vintage car, painted red and white", "isn't it a robot's head? it's metal!", "the 3 little pigs' house",
    "a lamp; a desk; a book (open)", "abcdefghijklmnopqrstuvwxyz 0123456789",
    " ".join("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]{}-_/\\&%$#@*+=<>|~`^"),
]


def write_tiny_clip(folder: str, gen: torch.Generator) -> str:
    """A tiny CLIP text model + tokenizer in the Hugging Face folder layout, random weights."""
    from safetensors.torch import save_file
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    from ..models.clip_text import PREFIX, ClipTextTransformer
    from ..models.clip_tokenizer import BOS, EOS, configure_clip_pipeline

    os.makedirs(folder, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=EOS, continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=[BOS, EOS], end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    configure_clip_pipeline(tok)
    tok.save(os.path.join(folder, "tokenizer.json"))
    tok.model.save(folder)                                   # vocab.json + merges.txt
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77}, f, indent=2)

    text_config = {**CLIP_TEXT_CONFIG, "vocab_size": tok.get_vocab_size()}
    tower = ClipTextTransformer(**text_config)
    randomise(tower, gen)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        ids = {"bos_token_id": tok.token_to_id(BOS), "eos_token_id": tok.token_to_id(EOS),
               "pad_token_id": tok.token_to_id(EOS)}
        json.dump({"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": COND_CHANNELS,
                   "text_config": {**text_config, **ids}}, f, indent=2)
    state = {PREFIX + k: v.contiguous() for k, v in tower.state_dict().items()}
    # The published file holds the vision tower and projections too; one stray tensor stands for them.
    state["visual_projection.weight"] = torch.randn(COND_CHANNELS, 16, generator=gen)
    save_file(state, os.path.join(folder, "model.safetensors"))
    return folder


def write_tiny_text_pipeline(out_dir: str, seed: int = 0) -> str:
    """Write the three folders; returns the text pipeline's folder."""
    from ..models import from_config

    gen = torch.Generator().manual_seed(seed + 1000)
    image_dir = write_tiny_pipeline(os.path.join(out_dir, IMAGE_DIR), seed)
    write_tiny_clip(os.path.join(out_dir, CLIP_DIR), gen)
    text_dir = os.path.join(out_dir, TEXT_DIR)
    os.makedirs(os.path.join(text_dir, "ckpts"), exist_ok=True)
    models = {}
    for key, (stem, name, args) in TEXT_FLOWS.items():
        config = {"name": name, "args": args}
        model = from_config(config)
        randomise(model, gen)
        save_model(model, config, os.path.join(text_dir, "ckpts", stem))
        models[key] = f"ckpts/{stem}"
    with open(os.path.join(image_dir, "pipeline.json"), encoding="utf-8") as f:
        image_models = json.load(f)["args"]["models"]
    for key in DECODERS:
        models[key] = f"{IMAGE_REPO}/{image_models[key]}"
    text_sampler = {**SAMPLER, "params": {**SAMPLER["params"], "cfg_strength": 7.5}}
    pipeline = {"name": "TrellisTextTo3DPipeline", "args": {
        "models": models,
        "sparse_structure_sampler": text_sampler,
        "slat_sampler": text_sampler,
        "slat_normalization": {"mean": SLAT_MEAN, "std": SLAT_STD},
        "text_cond_model": CLIP_REPO,
    }}
    with open(os.path.join(text_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(pipeline, f, indent=4)
    return text_dir
