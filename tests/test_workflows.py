"""Every shipped workflow runs headless as a user runs it: on the shipped default model (found in the pack's
own models/ folder) and input/genart-example-emoji.png; tiny models built from configs stand in where none ships
(text-to-image)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys

import pytest
from PIL import Image

from conftest import REPO

# Training and evaluation workflows ship with their real settings (minutes on the emoji dataset, which is not
# in git); tests/test_train.py, tests/test_evaluate.py and tests/test_gan_nodes.py run them on a test folder with
# fewer steps instead. protect-your-checkpoint needs the user's SD 1.5 checkpoint: tests/test_comfy_bridge.py runs
# it on a tiny SD-shaped one.
WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json")
                   if not p.stem.startswith(("train-", "evaluate-"))
                   and p.stem not in ("gan-vs-diffusion", "protect-your-checkpoint"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    from tiny_models import write_all

    root = tmp_path_factory.mktemp("models")
    write_all(root)
    return root


PACK_PARTS = ("__init__.py", "graph", "core", "nodes", "models", "input", "workflows", "web")


@pytest.fixture(scope="session")
def pack_elsewhere(tmp_path_factory):
    """A copy of the pack at a path of another length, imported as ComfyUI would (by file, under its folder
    name): its weights sit at other addresses, its configs record other paths."""
    folder = tmp_path_factory.mktemp("a-much-longer-folder-name-than-the-checkout-has") / "ComfyUI-GenArt-copy"
    folder.mkdir()
    for part in PACK_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / part)
    name = "genart_copy_elsewhere"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def run_shipped(pack, workflow, paths):
    """Run a UI workflow with `pack`'s own engine; (prompt, report)."""
    def engine(module: str):
        return importlib.import_module(f"{pack.__name__}.graph.{module}")

    prompt = engine("ui_format").ui_to_api(workflow, engine("comfy").object_info(pack.REGISTRY))
    executor = engine("executor").Executor(pack.REGISTRY, engine("context").RunSettings(paths=paths))
    return prompt, executor.run(prompt, workflow)


def written(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def workflow_paths(paths, models_dir):
    """The user's folders as a stock ComfyUI has them: its input/ ships a 768x768 example.png, which the
    shipped workflows must not pick up in place of the pack's own image."""
    from PIL import Image

    paths.models_dirs = [models_dir]
    Image.new("RGB", (768, 768), (20, 120, 200)).save(paths.input_dir / "example.png")
    assert not (paths.input_dir / "genart-example-emoji.png").exists(), "the pack's image comes from its own input/"
    return paths


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_headless(path, pack, workflow_paths, pack_elsewhere, tmp_path):
    """Each shipped workflow runs, and gives the same bytes from a copy of the pack at another path."""
    workflow = json.loads(path.read_text())
    prompt, report = run_shipped(pack, workflow, workflow_paths)
    outputs = [n for n, node in prompt.items() if pack.REGISTRY.get(node["class_type"]).spec.output_node]
    assert sorted(report.ui) == sorted(outputs), "every output node reports what it produced"
    for saved in (i for ui in report.ui.values() for i in ui.get("images", [])):
        root = workflow_paths.output_dir if saved["type"] == "output" else workflow_paths.temp_dir
        with Image.open(root / saved["subfolder"] / saved["filename"]) as im:
            assert im.size[0] > 0

    # The copy's own Paths: its pack folders (models/, input/) are the copied ones.
    elsewhere = importlib.import_module(f"{pack_elsewhere.__name__}.graph.safety").Paths(
        input_dir=workflow_paths.input_dir, output_dir=tmp_path / "out2", temp_dir=tmp_path / "temp2",
        models_dirs=workflow_paths.models_dirs)
    run_shipped(pack_elsewhere, workflow, elsewhere)
    here, there = written(workflow_paths.output_dir), written(elsewhere.output_dir)
    assert here == there, "the copy of the pack wrote other files or other bytes"
    # previews are named with a random suffix, as ComfyUI names them
    assert sorted(written(workflow_paths.temp_dir).values()) == sorted(written(elsewhere.temp_dir).values())
