"""Previews drawn at the end of training: reconstructions of a VQGAN, samples of a denoiser or a GAN."""
from __future__ import annotations

from typing import Any

import torch

from .dataset import ImageFolder, Split
from .handles import DenoiserHandle, SchedulerHandle, TextEncoderHandle, VQModelHandle


@torch.no_grad()
def reconstruction_preview(vq: Any, data: ImageFolder, count: int = 8) -> torch.Tensor:
    """Two rows: held-out (or training) images and their reconstructions, as one IMAGE [1, 2H, count*W, 3]."""
    split: Split = "heldout" if data.heldout else "train"
    x = data.images(split, 0, count).to(next(vq.parameters()).device)
    x_hat = (vq(x * 2 - 1).sample / 2 + 0.5).clamp(0, 1)
    rows = torch.cat([torch.cat(list(x), dim=2), torch.cat(list(x_hat), dim=2)], dim=1)
    return rows.movedim(0, -1)[None].float().cpu().contiguous()


@torch.no_grad()
def sample_preview(denoiser: DenoiserHandle, vq: VQModelHandle, scheduler: SchedulerHandle, count: int,
                   steps: int = 25, text: TextEncoderHandle | None = None, prompts: list[str] | None = None
                   ) -> torch.Tensor:
    """`count` DDIM samples decoded and laid out 8 per row: IMAGE [1, rows*H, 8*W, 3]; a text-conditioned
    denoiser gets `prompts` through `text` (no guidance)."""
    from diffusers import DDIMScheduler

    unet = denoiser.model
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    size, channels = int(unet.config.sample_size), int(unet.config.in_channels)
    x = torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(0)).to(denoiser.device)
    kwargs = {}
    if text is not None:
        from .text import encode_texts, max_tokens

        states, mask = encode_texts(text, list(prompts or [""] * count), max_tokens(text))
        kwargs = {"encoder_hidden_states": states.to(denoiser.device)}
        if mask is not None:
            kwargs["encoder_attention_mask"] = mask.to(denoiser.device)
    for t in sched.timesteps:
        x = sched.step(unet(x, t, **kwargs).sample, t, x).prev_sample
    z = (x / denoiser.latent_scale).to(vq.device, vq.dtype)
    return rows_of_eight((vq.model.decode(z).sample / 2 + 0.5).clamp(0, 1).float().cpu())


@torch.no_grad()
def gan_preview(generator: Any, count: int) -> torch.Tensor:
    """`count` samples of a GAN generator (z and noise seeded 0), 8 per row: IMAGE [1, rows*H, 8*W, 3]."""
    param = next(generator.parameters())
    z = torch.randn(count, int(generator.config.z_dim), generator=torch.Generator().manual_seed(0))
    x = generator(z.to(param.device, param.dtype), noise_generator=torch.Generator().manual_seed(1)).sample
    return rows_of_eight((x.float() / 2 + 0.5).clamp(0, 1).cpu())


def rows_of_eight(images: torch.Tensor) -> torch.Tensor:
    """NCHW images laid out 8 per row (white cells fill the last row): IMAGE [1, rows*H, 8*W, 3]."""
    count = images.shape[0]
    cols = min(8, count)
    rows = -(-count // cols)
    pad = torch.ones(rows * cols - count, *images.shape[1:])
    images = torch.cat([images, pad]).reshape(rows, cols, *images.shape[1:])
    grid = torch.cat([torch.cat(list(row), dim=2) for row in images], dim=1)
    return grid.movedim(0, -1)[None].contiguous()
