"""Tiny models built offline from configs and saved in real formats, for tests and workflow runs.

    python tests/tiny_models.py MODELS_DIR     # writes the layout below, seeded, in seconds

MODELS_DIR/vqgan/tiny-vq/              diffusers VQModel folder      (32 px -> 4x16x16 latent, 128 codes)
MODELS_DIR/vae/tiny-kl/                diffusers AutoencoderKL folder (32 px -> 4x16x16 latent)
MODELS_DIR/unet/tiny-unet/             diffusers UNet2DModel folder  (4x16x16, unconditional)
MODELS_DIR/unet/tiny-cond-unet/        diffusers UNet2DConditionModel folder (cross-attention dim 32)
MODELS_DIR/text_encoders/tiny-clip/    CLIPTextModel + CLIPTokenizer folder (small made-up vocabulary)

The weights are random (seeded): these models check plumbing and equivalence, not image quality.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

VQ_CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                 norm_num_groups=8, latent_channels=4, num_vq_embeddings=128, vq_embed_dim=4,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
KL_CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                 norm_num_groups=8, latent_channels=4, sample_size=32,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
UNET_CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                   layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
COND_UNET_CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                        layers_per_block=1, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
CLIP_CONFIG = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                   max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
WORDS = ("a photo of cat dog red blue green small large emoji icon face smile heart star tree house "
         "car sun moon flower bird fish").split()


def tiny_vq():
    from diffusers import VQModel

    torch.manual_seed(0)
    return VQModel(**VQ_CONFIG).eval()


def tiny_kl():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(**KL_CONFIG).eval()


def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(2)
    return UNet2DModel(**UNET_CONFIG).eval()


def tiny_cond_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(3)
    return UNet2DConditionModel(**COND_UNET_CONFIG).eval()


def write_tokenizer_files(folder: Path) -> None:
    """A byte-level BPE vocabulary small enough to read: the special tokens, single characters
    (each with and without the end-of-word marker) and a few whole words."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def tiny_clip(folder: Path | None = None):
    """(tokenizer, text_encoder); the tokenizer files go to `folder` (a temp folder if None)."""
    import tempfile

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = folder or Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=CLIP_CONFIG["max_position_embeddings"])
    torch.manual_seed(4)
    config = CLIPTextConfig(vocab_size=len(tokenizer), **CLIP_CONFIG)
    return tokenizer, CLIPTextModel(config).eval()


def write_all(models_dir: Path) -> dict[str, Path]:
    """Write every tiny model under `models_dir`; returns name -> folder."""
    out = {
        "vq": models_dir / "vqgan" / "tiny-vq",
        "kl": models_dir / "vae" / "tiny-kl",
        "unet": models_dir / "unet" / "tiny-unet",
        "cond_unet": models_dir / "unet" / "tiny-cond-unet",
        "clip": models_dir / "text_encoders" / "tiny-clip",
    }
    tiny_vq().save_pretrained(out["vq"])
    tiny_kl().save_pretrained(out["kl"])
    tiny_unet().save_pretrained(out["unet"])
    tiny_cond_unet().save_pretrained(out["cond_unet"])
    tokenizer, encoder = tiny_clip(out["clip"])
    tokenizer.save_pretrained(out["clip"])
    encoder.save_pretrained(out["clip"])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for name, path in write_all(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
