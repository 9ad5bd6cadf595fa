"""Shared fixtures. The pack is imported as `comfyui_genart` (the installed name, an editable install
pointing at this checkout), never as top-level `graph`/`nodes`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/toy_nodes.py

# One intra-op thread: tiny models run far faster on a busy 2-core machine, and float reductions
# happen in one order, so bit-for-bit comparisons do not depend on the thread count.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pack():
    import comfyui_genart

    assert Path(comfyui_genart.__file__).resolve().parent == REPO, "the editable install points elsewhere"
    return comfyui_genart


@pytest.fixture()
def paths(tmp_path):
    from comfyui_genart.graph.safety import Paths

    for sub in ("input", "output", "temp", "models"):
        (tmp_path / sub).mkdir()
    return Paths(input_dir=tmp_path / "input", output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                 models_dirs=[tmp_path / "models"])


@pytest.fixture(scope="session")
def toy_registry(pack):
    """A registry of tiny test nodes plus the library's image nodes."""
    from toy_nodes import build_registry

    return build_registry(pack)


@pytest.fixture()
def make_executor(toy_registry, paths):
    from comfyui_genart.graph.cache import OutputCache
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    def make(cache=True, disk=None, registry=None, **settings):
        return Executor(registry or toy_registry, RunSettings(paths=paths, **settings),
                        cache=OutputCache() if cache else None, disk_cache=disk)

    return make


def emoji_like_folder(root, count=10, size=16):
    """Coloured discs on white with transparency, in groups of two."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    groups = {}
    for i in range(count):
        r = rng.uniform(size * 0.25, size * 0.45)
        cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[inside] = [*rng.integers(0, 255, 3), 255]
        Image.fromarray(rgba, "RGBA").save(root / f"e{i:02d}.png")
        groups[f"e{i:02d}.png"] = f"g{i // 2}"
    (root / "groups.json").write_text(json.dumps(groups))
    return root


def evaluation_prompt(folder="data", **overrides):
    """The shipped evaluate workflow, shrunk: a test folder of 24 images (emoji_like_folder), a few samples and
    steps."""
    prompt = json.loads((REPO / "workflows/api/evaluate-default-model.json").read_text())
    changes = {"GenArtLoadImageFolder": {"folder": folder, "holdout_fraction": 0.3},
               "GenArtSampleImageSet": {"count": 8, "steps": 2, "batch": 3},
               "GenArtRandomCodesImageSet": {"count": 8},
               "GenArtImageSetImages": {"count": 4},
               "GenArtKernelDistance": {"subsets": 5, "subset_size": 3},
               "GenArtMemorization": {"show": 3}}
    for node in prompt.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
        node["inputs"].update(overrides.get(node["class_type"], {}))
        if node["class_type"] == "GenArtDatasetImageSet" and node["inputs"]["count"]:
            node["inputs"]["count"] = 6
    return prompt
