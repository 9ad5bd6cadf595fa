"""Sampling a GAN generator (core.gan_models.GANGenerator): latents drawn per item, per-block noise strengths
from a text like "1, 1, 0, 1", images in [0, 1], and interpolation between two seeds.

Every item is made on its own, in order, with two CPU generators: one seeded with `seed` draws each item's z
(one draw of [1, z_dim] per item), one seeded from `noise_seed` draws each item's injected noise maps (the
generator's own draws for a batch of one). The noise stream's seed is derived (core.noise.derived_seed), so
seed == noise_seed does not make the noise a copy of z's draws. So item i is the same image, bit for bit,
whatever the batch or chunk it is made in, and the same z can be redrawn with only the layer noise changed
(another noise_seed).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .gan_models import NOISE_KINDS, slerp
from .noise import derived_seed


def parse_block_strengths(text: str, num_blocks: int | None = None,
                          name: str = "block_strengths") -> list[float] | None:
    """Per-block noise factors from "1, 1, 0, 1" (commas or spaces between numbers); None for an empty text
    (every block 1). With `num_blocks`, the text must give exactly one value per block. Values are finite and
    at least 0; a ValueError names the input, the value received and what is allowed."""
    stripped = text.strip()
    if not stripped:
        return None
    parts = [p for p in stripped.replace(",", " ").replace(";", " ").split() if p]
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{name} {text!r}: {part!r} is not a number; give one number per generator block, "
                             "separated by commas, such as '1, 1, 0, 1', or leave it empty (every block 1)") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} {text!r}: {part!r} is not allowed; each block's factor is a finite number "
                             ">= 0 (0 switches that block's noise off)")
        values.append(value)
    if num_blocks is not None and len(values) != num_blocks:
        raise ValueError(f"{name} {text!r} gives {len(values)} value{'s' if len(values) != 1 else ''} but the "
                         f"generator has {num_blocks} blocks (4x4 up to {4 * 2 ** (num_blocks - 1)}x"
                         f"{4 * 2 ** (num_blocks - 1)}); give exactly {num_blocks}, e.g. "
                         f"'{', '.join(['1'] * num_blocks)}', or leave it empty")
    return values


def block_strengths(noise_strength: float, text: str, num_blocks: int, name: str = "block_strengths") -> list[float]:
    """The generator's per-block noise strengths: `noise_strength` times each block's factor from `text`
    (empty: every block gets `noise_strength`)."""
    factors = parse_block_strengths(text, num_blocks, name)
    return [float(noise_strength)] * num_blocks if factors is None else [noise_strength * f for f in factors]


def latent_stream(seed: int, z_dim: int) -> Iterator[torch.Tensor]:
    """z [1, z_dim] ~ N(0, 1) of item 0, 1, 2, ... drawn in order on the CPU from one generator seeded with
    `seed` (for z_dim a multiple of 16, the rows of gan_models.seeded_latents(seed, count, z_dim))."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(1, z_dim, generator=generator)


def item_latents(seed: int, count: int, z_dim: int) -> torch.Tensor:
    """z [count, z_dim] of items 0 .. count-1 of `latent_stream(seed)`: item i does not depend on count."""
    stream = latent_stream(seed, z_dim)
    return torch.cat([next(stream) for _ in range(count)])


def interpolated_latents(seed_a: int, seed_b: int, frames: int, z_dim: int, spherical: bool = True) -> torch.Tensor:
    """z [frames, z_dim] from item 0 of seed_a (frame 0, exactly) to item 0 of seed_b (the last frame, exactly),
    at evenly spaced t: spherical (slerp) or linear."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (the two ends) but was given {frames}")
    z0, z1 = item_latents(seed_a, 1, z_dim), item_latents(seed_b, 1, z_dim)
    out = []
    for i in range(frames):
        t = i / (frames - 1)
        out.append(slerp(z0, z1, t) if spherical else (1 - t) * z0 + t * z1)
    return torch.cat(out)


@dataclass(frozen=True)
class NoiseSettings:
    """How a GAN is sampled besides z: the noise strength (one float, or one per block, multiplying the learned
    strengths), the noise distribution (gaussian, uniform, laplace, none) and seed, and the truncation psi."""

    strengths: Sequence[float] | float = 1.0
    kind: str = "gaussian"
    seed: int = 0
    truncation_psi: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind only supports {', '.join(NOISE_KINDS)} but was given {self.kind!r}")


def noise_stream(noise_seed: int) -> torch.Generator:
    """The CPU generator the layer noise of items 0, 1, 2, ... is drawn from, in order."""
    return torch.Generator().manual_seed(derived_seed(noise_seed, 1))


def to_unit_range(sample: torch.Tensor) -> torch.Tensor:
    """The generator's output (trained toward [-1, 1]) as float32 images in [0, 1], clamped."""
    return (sample.float() / 2 + 0.5).clamp(0, 1)


def generate_items(model: Any, z: torch.Tensor, noise: NoiseSettings,
                   noise_generator: torch.Generator | None = None, same_noise: bool = False) -> torch.Tensor:
    """Images float32 [B, C, H, W] in [0, 1] (on the CPU) from z [B, z_dim], made one item at a time.

    `noise_generator` draws each item's noise maps in turn (a fresh `noise_stream(noise.seed)` if None; pass
    one to continue its stream across calls). `same_noise`: every item gets the noise maps of item 0 (a fresh
    generator per item), as the frames of an interpolation do, so only z changes from frame to frame.
    """
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    generator = noise_generator if noise_generator is not None else noise_stream(noise.seed)
    images = []
    for i in range(z.shape[0]):
        item_generator = noise_stream(noise.seed) if same_noise else generator
        sample = model(z[i:i + 1].to(device, dtype), noise_strength=noise.strengths, noise_kind=noise.kind,
                       noise_generator=item_generator, truncation_psi=noise.truncation_psi).sample
        images.append(to_unit_range(sample).cpu())
    if not images:
        raise ValueError("no latents were given: z has 0 rows")
    return torch.cat(images)


def generate(model: Any, seed: int, count: int, noise: NoiseSettings, same_z: bool = False) -> torch.Tensor:
    """`count` images [count, C, H, W] in [0, 1]: items 0 .. count-1 of `seed` (z) and `noise.seed` (noise).
    `same_z`: every image takes item 0's z, so the batch shows only what the layer noise changes."""
    z_dim = int(model.config.z_dim)
    z = item_latents(seed, 1, z_dim).expand(count, z_dim) if same_z else item_latents(seed, count, z_dim)
    return generate_items(model, z, noise)


def interpolate(model: Any, seed_a: int, seed_b: int, frames: int, noise: NoiseSettings,
                spherical: bool = True) -> torch.Tensor:
    """`frames` images [frames, C, H, W] in [0, 1] along z from seed_a's item 0 to seed_b's, each frame with
    the same noise maps (item 0 of noise.seed): the ends equal generate(model, seed_a or seed_b, 1, noise)."""
    z = interpolated_latents(seed_a, seed_b, frames, int(model.config.z_dim), spherical)
    return generate_items(model, z, noise, same_noise=True)


def gan_chunks(model: Any, seed: int, count: int, noise: NoiseSettings, chunk_size: int) -> Iterator[torch.Tensor]:
    """generate(model, seed, count, noise) in chunks of `chunk_size` items, with the same items whatever the
    chunk size (both streams go on across chunks)."""
    stream = latent_stream(seed, int(model.config.z_dim))
    noise_generator = noise_stream(noise.seed)
    for start in range(0, count, chunk_size):
        n = min(chunk_size, count - start)
        yield generate_items(model, torch.cat([next(stream) for _ in range(n)]), noise, noise_generator)
