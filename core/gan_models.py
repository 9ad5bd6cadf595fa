"""A small GAN as diffusers models: a convolutional generator with StyleGAN's noise inputs and optional
style modulation, and a matching convolutional discriminator (save_pretrained / from_pretrained).

Generator: z [B, z_dim] -> (pixel norm, optional mapping MLP) -> w -> linear -> 4x4 map; then one block
per resolution (4x4, 8x8, ...; nearest 2x upsampling before every block but the first), each of
`layers_per_block` synthesis layers: conv 3x3 (modulated and demodulated by an affine of w when
`style_modulation`, as in StyleGAN2), + injected noise [B, 1, H, W] x a learned per-channel strength
(zero at init), + bias, LeakyReLU 0.2, pixel norm when not modulated; a 1x1 conv to RGB. Images come
out trained toward [-1, 1] and are not clamped.

Discriminator: 1x1 conv from RGB, then per resolution `layers_per_block` conv 3x3 and a 4x4 stride-2
conv down to 4x4; optional minibatch standard deviation, conv 3x3, linear, linear -> one logit. No
batch norm (gradient penalties act per sample); optional spectral norm.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

NoiseKind = Literal["gaussian", "uniform", "laplace", "none"]
NOISE_KINDS: tuple[str, ...] = ("gaussian", "uniform", "laplace", "none")


@dataclass
class GANGeneratorOutput(BaseOutput):
    """sample: float32 [B, 3, H, W], trained toward [-1, 1] (not clamped)."""

    sample: torch.Tensor


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x divided by the root mean square over dim 1 (ProGAN's pixelwise feature normalization)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def draw_noise(shape: Sequence[int], kind: NoiseKind, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-mean, unit-variance noise drawn on the CPU from `generator` (torch's global one if None).

    uniform: U(-sqrt 3, sqrt 3); laplace: the difference of two Exp(1) draws over sqrt 2 (scale 1/sqrt 2).
    """
    if kind == "gaussian":
        return torch.randn(*shape, generator=generator)
    if kind == "uniform":
        return (torch.rand(*shape, generator=generator) * 2 - 1) * math.sqrt(3.0)
    if kind == "laplace":
        a = torch.empty(*shape).exponential_(generator=generator)
        b = torch.empty(*shape).exponential_(generator=generator)
        return (a - b) / math.sqrt(2.0)
    raise ValueError(f"noise_kind only supports {', '.join(NOISE_KINDS[:-1])} here but was given {kind!r}")


def seeded_latents(seed: int, count: int, z_dim: int) -> torch.Tensor:
    """z [count, z_dim] ~ N(0, 1) drawn on the CPU from `seed`: the same seed gives the same codes."""
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents [..., D] at t in [0, 1] (t = 0 gives z0, t = 1 gives z1);
    linear where the two are (anti)parallel."""
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    u0, u1 = F.normalize(z0, dim=-1), F.normalize(z1, dim=-1)
    omega = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    sin = torch.where(safe, sin, torch.ones_like(sin))
    w0 = torch.where(safe, torch.sin((1 - t) * omega) / sin, 1 - t)
    w1 = torch.where(safe, torch.sin(t * omega) / sin, t)
    return w0 * z0 + w1 * z1


class SynthesisLayer(nn.Module):
    """conv 3x3 (modulated by w if `style_dim`), + noise x learned per-channel strength, + bias,
    LeakyReLU 0.2, pixel norm when not modulated. Maps [B, in, H, W] to [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, a=0.2, nonlinearity="leaky_relu")
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # Zero at init as in StyleGAN: the network learns how much noise each channel takes.
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.affine: nn.Linear | None = None
        if style_dim is not None:
            self.affine = nn.Linear(style_dim, in_channels)
            nn.init.ones_(self.affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, strength: float) -> torch.Tensor:
        if self.affine is not None:
            style = self.affine(w)
            # Modulating the activations instead of the weights: the same result as StyleGAN2's
            # per-sample weights without a grouped convolution.
            x = F.conv2d(x * style[:, :, None, None], self.weight, padding=1)
            demod = torch.rsqrt(style.square() @ self.weight.square().sum((2, 3)).T + 1e-8)
            x = x * demod[:, :, None, None]
        else:
            x = F.conv2d(x, self.weight, padding=1)
        if noise is not None and strength != 0:
            x = x + noise * (strength * self.noise_strength)[None, :, None, None]
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2)
        return x if self.affine is not None else pixel_norm(x)


class GANGenerator(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' two config_name types
    r"""Convolutional GAN generator with per-block noise inputs (StyleGAN) and optional style modulation.

    Args:
        z_dim (`int`, defaults to 128): size of the latent z (and of w).
        block_channels (`tuple[int, ...]`, defaults to `(128, 64, 32, 16)`): channels of the blocks at 4x4,
            8x8, 16x16, ...; the output side is 4 * 2 ** (len - 1) (32 for four blocks).
        layers_per_block (`int`, defaults to 1): synthesis layers (conv 3x3 + noise) per block.
        mapping_layers (`int`, defaults to 0): layers of the MLP z -> w (z_dim wide); 0 = w is z pixel-normed.
        style_modulation (`bool`, defaults to `False`): modulate every conv by an affine of w (StyleGAN2
            modulation / demodulation) instead of pixel-normalizing its output.
        out_channels (`int`, defaults to 3): image channels.
        w_avg_beta (`float`, defaults to 0.995): decay of the running mean of w kept in training, the
            centre of the truncation trick.
    """

    @register_to_config
    def __init__(self, z_dim: int = 128, block_channels: tuple[int, ...] = (128, 64, 32, 16),
                 layers_per_block: int = 1, mapping_layers: int = 0, style_modulation: bool = False,
                 out_channels: int = 3, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        if not block_channels:
            raise ValueError("block_channels needs at least one entry (the 4x4 block), but was empty")
        if layers_per_block < 1:
            raise ValueError(f"layers_per_block must be at least 1 but was given {layers_per_block}")
        if mapping_layers < 0:
            raise ValueError(f"mapping_layers must be 0 (no mapping MLP) or more but was given {mapping_layers}")
        self.w_avg_beta = w_avg_beta
        mapping: list[nn.Module] = []
        for _ in range(mapping_layers):
            mapping += [nn.Linear(z_dim, z_dim), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*mapping)
        self.input = nn.Linear(z_dim, block_channels[0] * 16)
        style_dim = z_dim if style_modulation else None
        self.blocks = nn.ModuleList()
        prev = block_channels[0]
        for channels in block_channels:
            layers = [SynthesisLayer(prev if i == 0 else channels, channels, style_dim)
                      for i in range(layers_per_block)]
            self.blocks.append(nn.ModuleList(layers))
            prev = channels
        self.to_rgb = nn.Conv2d(prev, out_channels, 1)
        self.register_buffer("w_avg", torch.zeros(z_dim))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def sample_size(self) -> int:
        return 4 * 2 ** (self.num_blocks - 1)

    def synthesis_layers(self) -> Iterator[tuple[int, SynthesisLayer]]:
        """(block index, layer) for every synthesis layer, in the order the noise is drawn."""
        for b, block in enumerate(self.blocks):
            for layer in block.children():
                yield b, cast(SynthesisLayer, layer)

    def noise_shapes(self, batch: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the injected noise maps, block by block, layer by layer."""
        return [(batch, 1, 4 * 2**b, 4 * 2**b) for b, _ in self.synthesis_layers()]

    def map(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """w [B, z_dim] from z [B, z_dim]; psi < 1 pulls w toward the running mean w_avg."""
        w = self.mapping(pixel_norm(z))
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            w = self.w_avg.lerp(w, truncation_psi)
        return w

    def _strengths(self, noise_strength: float | Sequence[float]) -> list[float]:
        if isinstance(noise_strength, (int, float)):
            return [float(noise_strength)] * self.num_blocks
        values = [float(s) for s in noise_strength]
        if len(values) != self.num_blocks:
            raise ValueError(f"noise_strength takes one float or one per block ({self.num_blocks}) but was "
                             f"given {len(values)} values: {values}")
        return values

    def forward(self, z: torch.Tensor, noise_strength: float | Sequence[float] = 1.0,
                noise_kind: NoiseKind = "gaussian", noise_generator: torch.Generator | None = None,
                truncation_psi: float = 1.0, return_dict: bool = True) -> GANGeneratorOutput | tuple[torch.Tensor]:
        r"""Images from latents.

        Args:
            z (`torch.Tensor`): latents [B, z_dim], standard normal in training.
            noise_strength (`float` or one `float` per block, defaults to 1.0): multiplies the learned noise
                strengths; 0 leaves a block's output independent of the noise (bit for bit).
            noise_kind (`str`, defaults to `"gaussian"`): distribution of the injected noise, "gaussian",
                "uniform" or "laplace" (all zero mean, unit variance), or "none" (no noise is drawn).
            noise_generator (`torch.Generator`, *optional*): CPU generator the noise is drawn from, in the
                order of `noise_shapes`, whatever the strengths; None uses torch's global generator.
            truncation_psi (`float`, defaults to 1.0): 1 = no truncation; 0 = every z gives the mean w.
            return_dict (`bool`, defaults to `True`): return a `GANGeneratorOutput` rather than a tuple.

        Returns:
            `GANGeneratorOutput` (or a 1-tuple) holding sample [B, out_channels, H, W].
        """
        if noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind only supports {', '.join(NOISE_KINDS)} but was given {noise_kind!r}")
        strengths = self._strengths(noise_strength)
        w = self.map(z, truncation_psi)
        if noise_kind == "none":
            noises: list[torch.Tensor | None] = [None] * len(self.noise_shapes(1))
        else:
            noises = [draw_noise(s, noise_kind, noise_generator).to(z.device, z.dtype)
                      for s in self.noise_shapes(z.shape[0])]
        x = self.input(w).view(z.shape[0], -1, 4, 4)
        for (b, layer), noise in zip(self.synthesis_layers(), noises, strict=True):
            if x.shape[-1] < 4 * 2**b:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(x, w, noise, strengths[b])
        image = self.to_rgb(x)
        return GANGeneratorOutput(sample=image) if return_dict else (image,)


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation over groups of `group_size` samples, averaged over
    channels and space (ProGAN). A batch not divisible by the group size uses groups of the whole batch."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.group_size if b % self.group_size == 0 else b
        y = x.view(g, b // g, c, h, w)
        # (y - mean).square().mean() rather than var(): var's backward is slow on CPU at these shapes.
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [b // g]
        y = y.repeat(g).view(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, y], dim=1)


class GANDiscriminator(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' two config_name types
    r"""Convolutional GAN discriminator (critic) from images to one logit per image.

    Args:
        block_channels (`tuple[int, ...]`, defaults to `(16, 32, 64, 128)`): channels at the full resolution,
            then after each halving down to 4x4; the input side is 4 * 2 ** (len - 1).
        layers_per_block (`int`, defaults to 1): stride-1 conv 3x3 layers before each 4x4 stride-2 conv.
        mbstd_group_size (`int`, defaults to 4): group of the minibatch-std feature at 4x4; 0 = none.
        spectral_norm (`bool`, defaults to `False`): spectral normalization on every conv and linear layer.
        in_channels (`int`, defaults to 3): image channels.

    Maps images [B, in_channels, H, W] in [-1, 1] to logits [B].
    """

    @register_to_config
    def __init__(self, block_channels: tuple[int, ...] = (16, 32, 64, 128), layers_per_block: int = 1,
                 mbstd_group_size: int = 4, spectral_norm: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        if not block_channels:
            raise ValueError("block_channels needs at least one entry (the 4x4 level), but was empty")
        if layers_per_block < 0 or mbstd_group_size < 0:
            raise ValueError(f"layers_per_block and mbstd_group_size must be 0 or more but were given "
                             f"{layers_per_block} and {mbstd_group_size}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, block_channels[0], 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in itertools.pairwise(block_channels):
            for _ in range(layers_per_block):
                layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2)]
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        top = block_channels[-1]
        if mbstd_group_size:
            layers.append(MinibatchStd(mbstd_group_size))
        layers += [nn.Conv2d(top + (1 if mbstd_group_size else 0), top, 3, padding=1), nn.LeakyReLU(0.2),
                   nn.Flatten(), nn.Linear(top * 16, top), nn.LeakyReLU(0.2), nn.Linear(top, 1)]
        if spectral_norm:
            layers = [nn.utils.parametrizations.spectral_norm(m) if isinstance(m, (nn.Conv2d, nn.Linear)) else m
                      for m in layers]
        self.main = nn.Sequential(*layers)
        self.sample_size = 4 * 2 ** (len(block_channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.sample_size or x.shape[-2] != self.sample_size:
            raise ValueError(f"the discriminator takes {self.sample_size}x{self.sample_size} images but was given "
                             f"{x.shape[-2]}x{x.shape[-1]}; change block_channels to match")
        return self.main(x).squeeze(1)
