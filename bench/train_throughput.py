"""Images per second of our VQGAN training step (train_vqgan: accelerate, checkpoint bookkeeping, logging)
against a plain hand-written PyTorch loop over the same model, losses and data, measured in the same run.

    python bench/train_throughput.py --data input/emoji32 [--steps 12] [--repeats 3]

Both run the default model's architecture with the discriminator on from the first step (the slowest
phase), batch 32, one thread each in turn. Prints images/s (min and median over repeats) and the
ratio ours / plain; the target is >= 0.95.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3


def plain_loop(config, data, steps: int) -> float:
    """The same computation written out by hand; returns seconds per step after WARMUP steps."""
    from comfyui_genart.core.dataset import BatchPlan, mix_seed
    from comfyui_genart.core.quantizer import EMAVectorQuantizer
    from comfyui_genart.core.vqgan_losses import PatchDiscriminator, adaptive_weight, hinge_d_loss
    from comfyui_genart.core.vqgan_trainer import build_vqmodel

    torch.manual_seed(config.seed)
    vq = build_vqmodel(config)
    disc = PatchDiscriminator(3, config.disc_channels, config.disc_layers)
    vq.quantize = EMAVectorQuantizer.replacing(vq.quantize, beta=config.commitment, decay=config.ema_decay,
                                               dead_code_threshold=config.dead_code_threshold)
    vq.train()
    opt_g = torch.optim.Adam([p for p in vq.parameters() if p.requires_grad], lr=config.learning_rate,
                             betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_learning_rate, betas=(0.5, 0.9))
    plan = BatchPlan(len(data.train), config.batch_size, config.seed)
    last = vq.decoder.conv_out.weight
    times = []
    for step in range(WARMUP + steps):
        start = time.perf_counter()
        items = plan.items(step)
        x = torch.stack([data.load(data.train[i], mix_seed(config.seed, e, i)) for i, e in items]) * 2 - 1
        h = vq.encode(x).latents
        z_q, qloss, _ = vq.quantize(h)
        x_hat = vq.decode(z_q, force_not_quantize=True).sample
        rec = (x - x_hat).abs().mean() + ((x - x_hat) ** 2).mean()
        g_loss = -disc(x_hat).mean()
        loss = rec + qloss + adaptive_weight(rec, g_loss, last, config.disc_weight) * g_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        real, fake = disc(torch.cat([x, x_hat.detach()])).chunk(2)
        d_loss = hinge_d_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        times.append(time.perf_counter() - start)
    return sum(times[WARMUP:]) / steps


def ours(config, data, steps: int) -> float:
    """train_vqgan's seconds per step after WARMUP steps (timed between its step callbacks)."""
    from dataclasses import replace

    from comfyui_genart.core.vqgan_trainer import train_vqgan

    stamps: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="genart-bench-"))
    try:
        train_vqgan(replace(config, steps=WARMUP + steps), _NoHeldout(data), tmp / "m", tmp / "ck",
                    on_step=lambda step, logs: stamps.append(time.perf_counter()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (stamps[-1] - stamps[WARMUP - 1]) / (len(stamps) - WARMUP)


class _NoHeldout:
    """The dataset without its held-out split, so the final evaluation stays out of the timing."""

    def __init__(self, data) -> None:
        self._data = data
        self.heldout = ()

    def __getattr__(self, name):
        return getattr(self._data, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an image folder (e.g. input/emoji32)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from graph.run import load_pack

    load_pack()
    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.vqgan_trainer import VQGANConfig

    torch.set_num_threads(args.threads)
    config = VQGANConfig(block_channels=(32, 64), num_codes=512, embed_dim=4, l1_weight=1.0, l2_weight=1.0,
                         disc_start=0, batch_size=32, checkpoint_every=0, learning_rate=5e-4,
                         disc_learning_rate=5e-4)
    data = open_image_folder(args.data, 32, 0.1, flip=True)
    rates: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(args.repeats):
        rates["plain"].append(config.batch_size / plain_loop(config, data, args.steps))
        rates["ours"].append(config.batch_size / ours(config, data, args.steps))
    for name, values in rates.items():
        print(f"{name:6s} images/s: min {min(values):7.1f}  median {statistics.median(values):7.1f}  "
              f"max {max(values):7.1f}")
    ratio = statistics.median(rates["ours"]) / statistics.median(rates["plain"])
    print(f"ratio ours / plain (medians): {ratio:.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
