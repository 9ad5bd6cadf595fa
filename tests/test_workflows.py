"""Every shipped workflow runs headless as a user runs it: on the shipped default model (found in the pack's
own models/ folder) and input/example.png; tiny models built from configs stand in where none ships
(text-to-image)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import REPO

# Training workflows ship with their real settings (minutes of training on a real dataset); tests/test_train.py
# runs them with a test folder, a few steps and tiny models instead.
WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json") if not p.stem.startswith("train-"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    from tiny_models import write_all

    root = tmp_path_factory.mktemp("models")
    write_all(root)
    return root


@pytest.fixture()
def workflow_paths(paths, models_dir):
    paths.models_dirs = [models_dir]
    assert not (paths.input_dir / "example.png").exists(), "input/example.png must come from the pack's own folder"
    return paths


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_headless(path, pack, workflow_paths):
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.graph.ui_format import ui_to_api

    workflow = json.loads(path.read_text())
    prompt = ui_to_api(workflow, object_info(pack.REGISTRY))
    report = Executor(pack.REGISTRY, RunSettings(paths=workflow_paths)).run(prompt, workflow)
    outputs = [n for n, node in prompt.items() if pack.REGISTRY.get(node["class_type"]).spec.output_node]
    assert sorted(report.ui) == sorted(outputs), "every output node reports what it produced"
    for saved in (i for ui in report.ui.values() for i in ui.get("images", [])):
        root = workflow_paths.output_dir if saved["type"] == "output" else workflow_paths.temp_dir
        with Image.open(root / saved["subfolder"] / saved["filename"]) as im:
            assert im.size[0] > 0
