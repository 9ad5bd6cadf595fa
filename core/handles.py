"""What travels over the GENART_* model sockets: loaded models with what they need to be used right.

Handles are plain containers; nodes never mutate the model inside one (a node that changes weights,
such as training, makes a new handle), so cached outputs that hold them stay valid.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

# Written beside a UNet trained here: its latent_scale and every training setting (prediction_type too).
TRAINING_FILE = "genart_training.json"


class _OnDevice:
    """`device` and `dtype` of a handle's module (`self.model`), read from its first parameter."""

    model: Any

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass(eq=False)
class VQModelHandle(_OnDevice):
    """A diffusers VQModel (encoder, vector quantizer, decoder). Socket GENART_VQMODEL."""

    model: Any  # diffusers.VQModel
    source: str = ""

    @property
    def num_codes(self) -> int:
        return int(self.model.config.num_vq_embeddings)


@dataclass(eq=False)
class GANHandle(_OnDevice):
    """A GAN generator (core.gan_models.GANGenerator): z -> image, with per-block noise inputs. Socket GENART_GAN."""

    model: Any  # GANGenerator
    source: str = ""


@dataclass(eq=False)
class AutoencoderHandle(_OnDevice):
    """A diffusers AutoencoderKL. Socket GENART_AUTOENCODER. LATENTs stay unscaled (ComfyUI's
    convention); `scaling_factor` is applied by the denoiser side."""

    model: Any  # diffusers.AutoencoderKL
    source: str = ""


@dataclass(eq=False)
class DenoiserHandle(_OnDevice):
    """A diffusers UNet2DModel (unconditional) or UNet2DConditionModel. Socket GENART_DENOISER.

    `latent_scale` multiplies a raw LATENT before the UNet sees it (0.18215 for SD 1.x; 1.0 when the
    denoiser was trained on raw latents) and divides its result back.
    """

    model: Any
    latent_scale: float = 1.0
    source: str = ""
    # What the UNet was trained to predict, when its folder says so (genart_training.json); samplers
    # refuse a scheduler that assumes another, which would silently give noise.
    prediction_type: str | None = None

    @property
    def conditional(self) -> bool:
        return getattr(self.model.config, "cross_attention_dim", None) is not None


@dataclass(eq=False)
class SchedulerHandle:
    """A diffusers scheduler as class name + config. Socket GENART_SCHEDULER.

    `fresh()` gives a new instance, so stateful schedulers (Euler, DPM-Solver++, UniPC, ...) never
    share state between nodes or runs. It builds one with from_config the first time and copies that
    after (from_config costs ~10x a deepcopy, and samplers ask once per run).
    """

    class_name: str
    config: dict[str, Any] = field(default_factory=dict)
    _template: Any = field(default=None, init=False, repr=False)

    def fresh(self) -> Any:
        if self._template is None:
            import diffusers

            cls = getattr(diffusers, self.class_name)
            self._template = cls.from_config(copy.deepcopy(self.config))
        return copy.deepcopy(self._template)


@dataclass(eq=False)
class TextEncoderHandle(_OnDevice):
    """A tokenizer + text encoder (transformers: CLIP, or a BERT-family AutoModel). Socket GENART_TEXT_ENCODER."""

    tokenizer: Any
    text_encoder: Any
    source: str = ""

    @property
    def model(self) -> Any:
        return self.text_encoder


@dataclass(eq=False)
class Conditioning:
    """Text conditioning for a conditional denoiser. Socket GENART_CONDITIONING.

    `cond`: [B, tokens, dim] prompt embeddings; `uncond`: the negative prompt's (same shape) or None
    when no classifier-free guidance is possible. The masks ([B, tokens], 1 = a token, 0 = padding) come
    with encoders that use one (not CLIP); the denoiser's cross-attention then ignores the padding.
    """

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    cond_mask: torch.Tensor | None = None
    uncond_mask: torch.Tensor | None = None
    tokens: tuple[str, ...] = ()  # the prompt's tokens (special ones included): labels of attention maps


@dataclass(eq=False)
class CodeMap:
    """Codebook indices of a VQ latent. Socket GENART_CODES.

    `indices`: int64 [B, h, w], each in [0, num_codes); `num_codes`: codebook size;
    `embed_dim`: channels of a quantized latent (for dequantizing).
    """

    indices: torch.Tensor
    num_codes: int
    embed_dim: int
