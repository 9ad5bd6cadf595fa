"""Shared fixtures. The pack is imported as `comfyui_genart` (the installed name, an editable install
pointing at this checkout), never as top-level `graph`/`nodes`."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
