"""Reproduce the default model's figures (models/MODEL_CARD.md) in one command.

    python tools/evaluate_default_model.py --data input/emoji32            # data: tools/build_emoji_dataset.py
    python tools/evaluate_default_model.py --data input/emoji32 --json out.json --grid samples.png

On the held-out split (by emoji group, as the training workflows make it):
- VQGAN: reconstruction PSNR and SSIM (means over images), codebook usage (distinct codes / codebook size);
- denoiser: Frechet distance in a fixed feature space, the VQ encoder's mid-block activations pooled
  over space (mean and standard deviation per channel), between N held-out images and
  (a) N samples (DDIM, seeded), (b) N decoded uniformly random code maps (the ceiling to beat),
  (c) N training images (the floor: two real sets).
Writes an 8x8 grid of the first 64 samples.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
NAME = "genart-emoji32"


def load_pack():
    sys.path.insert(0, str(REPO))
    from graph.run import load_pack as load

    return load()


@torch.no_grad()
def features(vq, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    """[N, 2C] mean and std over space of the encoder's mid-block output for images [N, 3, H, W] in [0, 1]."""
    out = []
    grabbed: list[torch.Tensor] = []
    hook = vq.encoder.mid_block.register_forward_hook(lambda _m, _i, o: grabbed.append(o))
    try:
        for i in range(0, len(images), batch):
            grabbed.clear()
            vq.encode(images[i:i + batch] * 2 - 1)
            h = grabbed[0].flatten(2).double()
            out.append(torch.cat([h.mean(2), h.std(2)], dim=1))
    finally:
        hook.remove()
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the trace of the root from the eigenvalues
    of S_a S_b (real and non-negative for covariance matrices, up to rounding)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s_a @ s_b)
    root_trace = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * root_trace)


@torch.no_grad()
def sample(unet, vq, latent_scale: float, sched_cfg: dict, count: int, steps: int, seed: int,
           batch: int = 128) -> torch.Tensor:
    """`count` DDIM samples decoded (snapped to the codebook), [N, 3, H, W] in [0, 1]; noise per batch
    drawn on the CPU from seed + batch start."""
    from diffusers import DDIMScheduler

    size, channels = int(unet.config.sample_size), int(unet.config.in_channels)
    scheduler = DDIMScheduler(**sched_cfg)
    out = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        scheduler.set_timesteps(steps)  # DDIM keeps no state between samples beyond its timesteps
        x = torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed + start))
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        out.append((vq.decode(x / latent_scale).sample / 2 + 0.5).clamp(0, 1))
    return torch.cat(out)


@torch.no_grad()
def random_codes(vq, count: int, latent_hw: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    k, d = int(vq.config.num_vq_embeddings), int(vq.quantize.vq_embed_dim)
    idx = torch.randint(k, (count * latent_hw * latent_hw,), generator=gen)
    z = vq.quantize.get_codebook_entry(idx, (count, latent_hw, latent_hw, d))
    return (vq.decode(z, force_not_quantize=True).sample / 2 + 0.5).clamp(0, 1)


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, pad: int = 2) -> None:
    from PIL import Image

    n, _, h, w = images.shape
    rows = -(-n // cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[y:y + h, x:x + w] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the emoji folder (tools/build_emoji_dataset.py)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models", help="holds vqgan/ and unet/ (default: "
                        "the shipped models)")
    parser.add_argument("--name", default=NAME, help=f"model name in vqgan/ and unet/ (default {NAME})")
    parser.add_argument("--holdout-fraction", type=float, default=0.1, help="as in the training workflows")
    parser.add_argument("--split-seed", type=int, default=0, help="as in the training workflows")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per sample (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of samples, random codes and the train subset")
    parser.add_argument("--grid", type=Path, help="write the first 64 samples here as an 8x8 grid PNG")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    load_pack()
    from diffusers import UNet2DModel, VQModel

    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.denoiser_trainer import DenoiserConfig, scheduler_config
    from comfyui_genart.core.handles import TRAINING_FILE
    from comfyui_genart.core.train_loop import dataclass_from
    from comfyui_genart.core.vqgan_trainer import evaluate_vq

    vq = VQModel.from_pretrained(args.models_dir / "vqgan" / args.name, local_files_only=True,
                                 torch_dtype=torch.float32).eval()
    unet_dir = args.models_dir / "unet" / args.name
    unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True, torch_dtype=torch.float32).eval()
    training = json.loads((unet_dir / TRAINING_FILE).read_text())
    latent_scale = float(training["latent_scale"])
    sched_cfg = scheduler_config(dataclass_from(DenoiserConfig, training["config"]))
    data = open_image_folder(args.data, 32, args.holdout_fraction, args.split_seed)
    heldout = data.images("heldout")
    n = len(heldout)
    groups = json.loads((args.data / "groups.json").read_text())
    held_groups = {groups[f] for f in data.heldout}
    figures: dict[str, object] = {"heldout_images": n, "train_images": len(data.train),
                                  "heldout_groups": len(held_groups),
                                  "groups_shared_with_train": len(held_groups & {groups[f] for f in data.train})}

    figures["vqgan"] = evaluate_vq(vq, heldout)
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(args.seed))[:n]
    train_subset = torch.stack([data.load(data.train[int(i)]) for i in pick])
    start = time.perf_counter()
    samples = sample(unet, vq, latent_scale, sched_cfg, n, args.steps, args.seed)
    seconds = time.perf_counter() - start
    latent_hw = int(unet.config.sample_size)
    randoms = random_codes(vq, n, latent_hw, args.seed)
    f_held = features(vq, heldout)
    figures["frechet"] = {
        "feature_space": "VQ encoder mid-block output, mean and std over space per channel "
                         f"({f_held.shape[1]} dims)",
        "samples_vs_heldout": frechet_distance(features(vq, samples), f_held),
        "random_codes_vs_heldout": frechet_distance(features(vq, randoms), f_held),
        "train_vs_heldout_floor": frechet_distance(features(vq, train_subset), f_held),
        "n": n, "ddim_steps": args.steps, "sampling_seconds": round(seconds, 2),
    }
    fr = figures["frechet"]
    assert isinstance(fr, dict)
    fr["samples_closer_to_floor_than_to_random"] = (
        abs(fr["samples_vs_heldout"] - fr["train_vs_heldout_floor"])
        < abs(fr["samples_vs_heldout"] - fr["random_codes_vs_heldout"]))
    if args.grid:
        save_grid(samples[:64], args.grid)
        figures["grid"] = str(args.grid)
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
