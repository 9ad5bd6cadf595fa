"""An image folder as a training set: streamed from disk, resized and cropped, flipped, split by group.

Nothing is held in memory but the file names. Every random choice (the order of an epoch, a crop
offset, a flip) is a pure function of (seed, epoch, image), so a batch is fully determined by
(seed, step): resuming at step k needs no data-loader state, and N processes that each take their
slice of the global batch see exactly what one process with that global batch sees.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps

DATASET_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Optional file in the folder: {"relative/file.png": "group name"}; files of one group share a split.
GROUPS_FILE = "groups.json"
# Optional file in the folder (tools/emoji_captions.py writes it for the emoji set):
# {"file.png": {"captions": ["red heart", ...], "category": "Smileys & Emotion", "name": "red heart"}}.
CAPTIONS_FILE = "captions.json"
Split = Literal["train", "heldout"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions, unlike hash())."""
    digest = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def group_fraction(group: str, split_seed: int) -> float:
    """Where a group falls in [0, 1): a group is held out when this is below the held-out fraction."""
    digest = hashlib.blake2b(f"{split_seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(eq=False)
class ImageFolder:
    """Image files of one folder, split into train and held-out, with the transform applied on load.

    Socket GENART_DATASET. `load` returns float32 [3, resolution, resolution] in [0, 1].
    """

    root: Path
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    resolution: int
    crop: Literal["center", "random"] = "center"
    flip: bool = False
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # file -> its captions
    categories: dict[str, str] = field(default_factory=dict)  # file -> its class label

    def files(self, split: Split) -> tuple[str, ...]:
        return self.train if split == "train" else self.heldout

    def load(self, name: str, augment_seed: int | None = None) -> torch.Tensor:
        """One image; `augment_seed` None means no augmentation (center crop, no flip)."""
        rng = random.Random(augment_seed) if augment_seed is not None else None
        flip = rng is not None and rng.random() < 0.5 and self.flip
        with PILImage.open(self.root / name) as src:
            im: PILImage.Image = ImageOps.exif_transpose(src) or src
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = PILImage.new("RGBA", im.size, (*(round(c * 255) for c in self.background), 255))
                im = PILImage.alpha_composite(bg, im)
            im = im.convert("RGB")
            w, h = im.size
            scale = self.resolution / min(w, h)
            if (w, h) != (self.resolution, self.resolution) and scale != 1:
                size = (max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale)))
                im = im.resize(size, PILImage.Resampling.BICUBIC, reducing_gap=3.0)
            w, h = im.size
            if rng is not None and self.crop == "random":
                left, top = rng.randint(0, w - self.resolution), rng.randint(0, h - self.resolution)
            else:
                left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
            im = im.crop((left, top, left + self.resolution, top + self.resolution))
            if flip:
                im = im.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
            array = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def will_flip(self, augment_seed: int) -> bool:
        """Whether `load(name, augment_seed)` flips (the first draw of its generator)."""
        return self.flip and random.Random(augment_seed).random() < 0.5

    def images(self, split: Split, start: int = 0, count: int | None = None) -> torch.Tensor:
        """Un-augmented images start .. start+count-1 of a split, float32 [N, 3, H, W] in [0, 1]."""
        names = self.files(split)[start:None if count is None else start + count]
        if not names:
            return torch.zeros(0, 3, self.resolution, self.resolution)
        return torch.stack([self.load(n) for n in names])


def list_images(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in DATASET_EXTENSIONS and not p.name.startswith("."))


def open_image_folder(root: Path, resolution: int, holdout_fraction: float, split_seed: int = 0,
                      crop: Literal["center", "random"] = "center", flip: bool = False,
                      background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> ImageFolder:
    """List `root` (recursively) and split it by group: groups.json if present, else one group per file.

    A group goes to the held-out split when its hash (salted with `split_seed`) falls below
    `holdout_fraction`; adding files never moves other groups across the split.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    names = list_images(root)
    if not names:
        raise ValueError(f"image folder {root} holds no {'/'.join(DATASET_EXTENSIONS)} files")
    groups: dict[str, str] = {}
    groups_path = root / GROUPS_FILE
    if groups_path.is_file():
        try:
            groups = json.loads(groups_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{groups_path} is not valid JSON ({err}); it must map file names to group "
                             "names, or be removed") from err
        if not isinstance(groups, dict):
            raise ValueError(f"{groups_path} must be a JSON object mapping file names to group names")
    heldout = tuple(n for n in names if group_fraction(str(groups.get(n, n)), split_seed) < holdout_fraction)
    held = set(heldout)
    train = tuple(n for n in names if n not in held)
    captions, categories = read_captions(root / CAPTIONS_FILE)
    return ImageFolder(root, train, heldout, resolution, crop, flip, background, captions, categories)


def read_captions(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """captions.json's captions and categories per file; empty when the folder has none."""
    if not path.is_file():
        return {}, {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it must map file names to "
                         '{"captions": [...], "category": ...}, or be removed') from err
    if not isinstance(entries, dict):
        raise ValueError(f"{path} must be a JSON object mapping file names to their captions")
    captions: dict[str, tuple[str, ...]] = {}
    categories: dict[str, str] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: the entry of {name!r} must be an object with 'captions' and 'category'")
        texts = entry.get("captions", [])
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{path}: 'captions' of {name!r} must be a list of strings")
        if texts:
            captions[name] = tuple(texts)
        if isinstance(entry.get("category"), str):
            categories[name] = entry["category"]
    return captions, categories


class BatchPlan:
    """Which images make the batch of a step: epochs are seeded permutations laid end to end.

    Step s takes positions [s*G, (s+1)*G) of that endless stream (G = global batch), so a dataset
    smaller than a batch simply repeats; process `rank` of `world` takes its contiguous share.
    """

    def __init__(self, size: int, global_batch: int, seed: int) -> None:
        if size < 1:
            raise ValueError("the training split is empty: lower holdout_fraction or add images")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.size, generator=gen)
        return self._perms[epoch]

    def items(self, step: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """(image index, epoch) for this process's share of step `step`'s batch."""
        share = self.global_batch // world
        first = step * self.global_batch + rank * share
        out = []
        for pos in range(first, first + share):
            epoch, offset = divmod(pos, self.size)
            out.append((int(self.permutation(epoch)[offset]), epoch))
        return out


class _StepBatches(torch.utils.data.Dataset):
    """Item i = the (rank's) batch of step i, float32 [B, 3, H, W] in [0, 1]; for torch's DataLoader."""

    def __init__(self, data: ImageFolder, plan: BatchPlan, rank: int, world: int) -> None:
        self.data, self.plan, self.rank, self.world = data, plan, rank, world
        self.names = data.train

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> torch.Tensor:
        items = self.plan.items(step, self.rank, self.world)
        return torch.stack([self.data.load(self.names[i], mix_seed(self.plan.seed, epoch, i)) for i, epoch in items])


def train_batches(data: ImageFolder, global_batch: int, seed: int, start_step: int, end_step: int,
                  rank: int = 0, world: int = 1, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """This process's batches of steps start_step .. end_step-1 of the training split, augmented."""
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} does not split evenly over {world} processes; "
                         f"use a multiple of {world}")
    source = _StepBatches(data, BatchPlan(len(data.train), global_batch, seed), rank, world)
    if num_workers == 0:
        for step in range(start_step, end_step):
            yield source[step]
        return
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=range(start_step, end_step),
                                         num_workers=num_workers, persistent_workers=False)
    yield from loader

