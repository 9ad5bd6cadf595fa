"""The streamed image-folder dataset: split by group, transform, deterministic batches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image


def write_folder(root, count=12, size=(40, 30), groups=None):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    if groups is not None:
        (root / "groups.json").write_text(json.dumps(groups))
    return root


def test_split_keeps_groups_together_and_is_stable(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    groups = {f"img{i:02d}.png": f"g{i // 3}" for i in range(12)}
    root = write_folder(tmp_path / "d", groups=groups)
    data = open_image_folder(root, 16, 0.5, split_seed=3)
    held = {groups[n] for n in data.heldout}
    assert held and held.isdisjoint({groups[n] for n in data.train}), "a group never straddles the split"
    assert len(data.train) + len(data.heldout) == 12
    again = open_image_folder(root, 16, 0.5, split_seed=3)
    assert (again.train, again.heldout) == (data.train, data.heldout)
    assert open_image_folder(root, 16, 0.0).heldout == ()


def test_load_resizes_crops_and_flips(tmp_path):
    from comfyui_genart.core.dataset import mix_seed, open_image_folder

    root = write_folder(tmp_path / "d", count=1)
    plain = open_image_folder(root, 16, 0.0)
    x = plain.load("img00.png")
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    flipping = open_image_folder(root, 16, 0.0, flip=True)
    seeds = [mix_seed(0, 0, i) for i in range(20)]
    flips = [flipping.will_flip(s) for s in seeds]
    assert any(flips) and not all(flips)
    for s, f in zip(seeds, flips, strict=True):
        expect = x.flip(-1) if f else x
        torch.testing.assert_close(flipping.load("img00.png", s), expect, rtol=0, atol=0)


def test_load_composites_alpha_on_background(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    root = tmp_path / "d"
    root.mkdir()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(root / "a.png")
    x = open_image_folder(root, 8, 0.0, background=(0.0, 0.0, 1.0)).load("a.png")
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[:, 7, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_batch_plan_shards_equal_one_process():
    from comfyui_genart.core.dataset import BatchPlan

    plan = BatchPlan(size=10, global_batch=4, seed=1)
    for step in range(6):
        whole = plan.items(step)
        assert plan.items(step, 0, 2) + plan.items(step, 1, 2) == whole
    epoch0 = [i for step in range(5) for i, e in plan.items(step) if e == 0]
    assert sorted(epoch0) == list(range(10)), "an epoch visits every image once"
    small = BatchPlan(size=3, global_batch=8, seed=0)
    assert len(small.items(0)) == 8, "a dataset smaller than a batch repeats"


def test_train_batches_resume_mid_stream(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder, train_batches

    data = open_image_folder(write_folder(tmp_path / "d"), 16, 0.0, crop="random", flip=True)
    full = list(train_batches(data, 4, seed=5, start_step=0, end_step=5))
    tail = list(train_batches(data, 4, seed=5, start_step=3, end_step=5))
    for a, b in zip(full[3:], tail, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not split evenly"):
        next(train_batches(data, 5, 0, 0, 1, rank=0, world=2))


def test_open_image_folder_errors(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    with pytest.raises(FileNotFoundError):
        open_image_folder(tmp_path / "missing", 16, 0.1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        open_image_folder(tmp_path / "empty", 16, 0.1)
    root = write_folder(tmp_path / "bad", count=1)
    (root / "groups.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"groups\.json must be a JSON object"):
        open_image_folder(root, 16, 0.1)
