"""Image sets: many images read or made chunk by chunk, so 10,000 of them never sit in one tensor.

A set knows its size and a label ("emoji32 heldout (332)"); `chunks()` yields float32 NCHW images in
[0, 1], in order, `chunk_size` at a time, and `take(indices)` returns chosen items (for grids), bit-identical
to what `chunks()` gave. Sampled sets draw every item's noise from one seeded stream, as one batch of `count`
would, so an item's noise does not depend on the chunk size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .autoencoders import decode_latents
from .dataset import ImageFolder, Split
from .denoising import Guidance, begin_denoising, prepare_guidance
from .gan_sampling import NoiseSettings, gan_chunks
from .handles import Conditioning, DenoiserHandle, SchedulerHandle, TextEncoderHandle

Progress = Callable[[int], None]  # called with the number of items just made


# Generated sets keep what they made up to this many bytes, so a grid or a memorization check after the
# features does not sample again (332 samples of 32x32: 4 MB; 10,000 of 256x256 would not be kept).
KEEP_BYTES = 512 << 20


class ImageSet:
    """Base of the image sets. Socket GENART_IMAGE_SET.

    Generated sets implement `_make()`; the base keeps the chunks it made (when the whole set fits in
    KEEP_BYTES) and hands them out again instead of generating twice."""

    label: str
    count: int
    _kept: list[torch.Tensor] | None = None
    # Each item's class (a dataset split's categories; the category a prompted sample was asked for), or
    # None: what GenArt Classifier Accuracy compares a classifier's predictions with.
    labels: tuple[str, ...] | None = None

    def _make(self) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def chunks(self, on_items: Progress | None = None) -> Iterator[torch.Tensor]:
        if self._kept is not None:
            for chunk in self._kept:
                if on_items is not None:
                    on_items(len(chunk))
                yield chunk
            return
        keep: list[torch.Tensor] | None = []
        for chunk in self._make():
            if keep is not None:
                keep.append(chunk)
                if chunk[0].numel() * chunk.element_size() * self.count > KEEP_BYTES:
                    keep = None
            if on_items is not None:
                on_items(len(chunk))
            yield chunk
        if keep is not None:
            self._kept = keep

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """Items `indices` (any order, repeats allowed), float32 [len, C, H, W]; generated sets regenerate
        the chunks that hold them (up to the last one needed)."""
        wanted = sorted(set(int(i) for i in indices))
        for i in wanted:
            if not 0 <= i < self.count:
                raise IndexError(f"item {i} is outside the set {self.label!r} of {self.count} images")
        found: dict[int, torch.Tensor] = {}
        start = 0
        for chunk in self.chunks():
            for i in wanted:
                if start <= i < start + len(chunk):
                    found[i] = chunk[i - start]
            start += len(chunk)
            if len(found) == len(wanted):
                break
        return torch.stack([found[int(i)] for i in indices]) if len(indices) else torch.zeros(0)

    chunk_size: int = 128


@dataclass(eq=False)
class TensorImages(ImageSet):
    """Images already in memory, NCHW float32 in [0, 1]."""

    images: torch.Tensor
    label: str

    @property
    def count(self) -> int:  # type: ignore[override]
        return int(self.images.shape[0])

    def chunks(self, on_items: Progress | None = None) -> Iterator[torch.Tensor]:
        for start in range(0, self.count, self.chunk_size):
            chunk = self.images[start:start + self.chunk_size]
            if on_items is not None:
                on_items(len(chunk))
            yield chunk

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[list(indices)]


@dataclass(eq=False)
class DatasetImages(ImageSet):
    """Files of a dataset split, un-augmented (center crop, no flip), read as needed."""

    data: ImageFolder
    names: tuple[str, ...]
    label: str

    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.names)

    def chunks(self, on_items: Progress | None = None) -> Iterator[torch.Tensor]:
        for start in range(0, self.count, self.chunk_size):
            chunk = torch.stack([self.data.load(n) for n in self.names[start:start + self.chunk_size]])
            if on_items is not None:
                on_items(len(chunk))
            yield chunk

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.data.load(self.names[int(i)]) for i in indices])

    def __post_init__(self) -> None:
        if self.labels is None and self.names and all(n in self.data.categories for n in self.names):
            self.labels = tuple(self.data.categories[n] for n in self.names)


def dataset_images(data: ImageFolder, split: Split, count: int, seed: int, folder_name: str) -> DatasetImages:
    """`count` files of a split (0 = all, in file order), or a seeded random subset of that many."""
    names = data.files(split)
    if not names:
        raise ValueError(f"the {split} split of {folder_name!r} is empty; lower holdout_fraction or add images")
    if count and count > len(names):
        raise ValueError(f"input 'count' = {count} but the {split} split of {folder_name!r} has {len(names)} "
                         f"images; use at most {len(names)} (0 = all)")
    if count and count < len(names):
        pick = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))[:count]
        names = tuple(names[int(i)] for i in pick)
        label = f"{folder_name} {split} random {count} of {len(data.files(split))} (seed {seed})"
    else:
        label = f"{folder_name} {split} ({len(names)})"
    return DatasetImages(data, names, label)


@dataclass(eq=False)
class SampledImages(ImageSet):
    """`count` samples of an unconditional denoiser, decoded by an autoencoder; made per chunk on demand.

    Noise: one generator seeded with `seed` draws every item's starting noise in order, so item i is the
    same whatever the chunk size (ComfyUI's prepare_noise for one batch of `count`). Decoding snaps a VQ
    latent to its codebook first, as latent diffusion decodes.
    """

    denoiser: DenoiserHandle
    scheduler: SchedulerHandle
    decoder: Any  # a diffusers VQModel or AutoencoderKL
    count: int  # type: ignore[assignment]
    steps: int
    seed: int
    latent_shape: tuple[int, int, int]
    label: str
    chunk_size: int = 64

    def _make(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        guidance = Guidance(None, False, 1.0)
        for start in range(0, self.count, self.chunk_size):
            n = min(self.chunk_size, self.count - start)
            noise = torch.randn((n, *self.latent_shape), generator=generator)
            zeros = torch.zeros_like(noise)
            denoising = begin_denoising(self.denoiser, self.scheduler, {"samples": zeros}, seed=self.seed,
                                        steps=self.steps, start=0, add_noise=True, noise={"samples": noise},
                                        start_input="steps")
            denoising.run(self.denoiser.model, guidance, denoising.total)
            yield decode_latents(self.decoder, denoising.samples()).cpu()


@dataclass(eq=False)
class PromptedImages(ImageSet):
    """Samples of a text-conditioned denoiser, one per prompt, decoded; made per chunk on demand. Noise as in
    SampledImages (one seeded stream, item i the same whatever the chunk); the negative prompt is empty."""

    denoiser: DenoiserHandle
    scheduler: SchedulerHandle
    decoder: Any
    text: TextEncoderHandle
    prompts: tuple[str, ...]
    steps: int
    cfg: float
    seed: int
    latent_shape: tuple[int, int, int]
    label: str
    labels: tuple[str, ...] | None = None
    chunk_size: int = 64

    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.prompts)

    def _make(self) -> Iterator[torch.Tensor]:
        from .text import encode_texts, max_tokens

        generator = torch.Generator().manual_seed(self.seed)
        length = max_tokens(self.text)
        for start in range(0, self.count, self.chunk_size):
            prompts = list(self.prompts[start:start + self.chunk_size])
            noise = torch.randn((len(prompts), *self.latent_shape), generator=generator)
            cond, cond_mask = encode_texts(self.text, prompts, length)
            uncond, uncond_mask = encode_texts(self.text, [""], length)
            guidance = prepare_guidance(self.denoiser, Conditioning(cond, uncond, cond_mask, uncond_mask),
                                        self.cfg, len(prompts))
            denoising = begin_denoising(self.denoiser, self.scheduler, {"samples": torch.zeros_like(noise)},
                                        seed=self.seed, steps=self.steps, start=0, add_noise=True,
                                        noise={"samples": noise}, start_input="steps")
            denoising.run(self.denoiser.model, guidance, denoising.total)
            yield decode_latents(self.decoder, denoising.samples()).cpu()


@dataclass(eq=False)
class RandomCodeImages(ImageSet):
    """Decoded code maps of uniformly random VQ codes: what a model that learnt nothing about the codes'
    arrangement would draw (the ceiling a denoiser over VQ latents must beat)."""

    vq: Any  # diffusers VQModel
    count: int  # type: ignore[assignment]
    height: int
    width: int
    seed: int
    label: str
    chunk_size: int = 128

    def _make(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        k, d = int(self.vq.config.num_vq_embeddings), int(self.vq.quantize.vq_embed_dim)
        for start in range(0, self.count, self.chunk_size):
            n = min(self.chunk_size, self.count - start)
            idx = torch.randint(k, (n * self.height * self.width,), generator=generator)
            z = self.vq.quantize.get_codebook_entry(idx.to(next(self.vq.parameters()).device),
                                                    (n, self.height, self.width, d))
            yield decode_latents(self.vq, z, quantize=False).cpu()


@dataclass(eq=False)
class GANImages(ImageSet):
    """`count` samples of a GAN generator (core.gan_models.GANGenerator), made per chunk on demand.

    Item i's z is the i-th draw of one generator seeded with `seed`, its layer noise the i-th item's draws of
    one seeded with `noise.seed` (core.gan_sampling), so item i is the same whatever the chunk size.
    """

    generator: Any  # GANGenerator
    count: int  # type: ignore[assignment]
    seed: int
    noise: NoiseSettings
    label: str
    chunk_size: int = 128

    def _make(self) -> Iterator[torch.Tensor]:
        yield from gan_chunks(self.generator, self.seed, self.count, self.noise, self.chunk_size)
