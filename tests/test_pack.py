"""The pack loads the way ComfyUI loads it, the CLI runs from the repo root, the console script works."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO


def load_like_comfyui(tmp_path: Path) -> types.ModuleType:
    """ComfyUI's load_custom_node: module name = the folder path, beside its own top-level `nodes`."""
    pack_dir = tmp_path / "custom_nodes" / "ComfyUI-GenArt"
    pack_dir.parent.mkdir(parents=True)
    os.symlink(REPO, pack_dir)
    foreign = types.ModuleType("nodes")
    foreign.NODE_CLASS_MAPPINGS = {}  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("nodes", "graph")}
    sys.modules["nodes"] = foreign
    sys.modules.pop("graph", None)
    name = str(pack_dir).replace(".", "_x_")
    try:
        spec = importlib.util.spec_from_file_location(name, pack_dir / "__init__.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        assert sys.modules["nodes"] is foreign, "the pack replaced ComfyUI's own nodes module"
        assert "graph" not in sys.modules, "the pack created a top-level 'graph' module"
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def test_pack_loads_like_comfyui_with_foreign_nodes_module(tmp_path, pack):
    module = load_like_comfyui(tmp_path)
    mappings = module.NODE_CLASS_MAPPINGS
    assert set(mappings) == {n for n, c in pack.REGISTRY.items() if not c.HEADLESS_ONLY}
    assert {"GenArtLoadImage", "GenArtSaveImage", "GenArtPreviewImage", "GenArtResizeImage"} <= set(mappings)
    # Headless stand-ins must never shadow ComfyUI's own classes.
    assert not {"LoadImage", "SaveImage", "PreviewImage"} & set(mappings)
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(mappings)
    resize = mappings["GenArtResizeImage"]
    assert resize.RETURN_TYPES == ("IMAGE",) and resize.FUNCTION == "execute"
    assert resize.INPUT_TYPES()["required"]["width"] == (
        "INT", {"min": 1, "max": 8192, "step": 1, "tooltip": "target width in pixels", "default": 512})


def run_cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph.run", *args], cwd=cwd, capture_output=True, text=True)


def test_pack_tests_run_in_a_checkout_named_like_a_custom_node(tmp_path):
    """pytest imports the checkout's __init__.py by itself when the folder name is no identifier (users clone
    into custom_nodes/ComfyUI-GenArt): that import must not fail every test."""
    checkout = tmp_path / "custom_nodes" / "ComfyUI-GenArt"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("tests/", "__init__.py", "pyproject.toml")):
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, checkout / name)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                             "tests/test_noise.py::test_noise_gaussian_same_seed_gives_identical_bits"],
                            cwd=checkout, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


def test_pack_cli_runs_shipped_workflow_from_repo_root(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["workflows/image-utilities.json", "--output-dir", str(out), "--quiet",
                    "--report", str(tmp_path / "report.json")])
    assert proc.returncode == 0, proc.stderr
    saved = sorted((out / "genart").glob("image-utilities_*_.png"))
    assert [p.name for p in saved] == ["image-utilities_00001_.png", "image-utilities_00002_.png"]
    with Image.open(saved[0]) as im:
        assert im.size == (48, 48)
        assert json.loads(im.text["prompt"])["3"]["class_type"] == "GenArtCropImage"
        assert json.loads(im.text["workflow"])["version"] == 0.4
    report = json.loads((tmp_path / "report.json").read_text())
    assert {n["node_id"]: n["status"] for n in report["nodes"]} == dict.fromkeys("12345", "ran")
    assert str(saved[0]) in proc.stdout


def test_pack_cli_list_nodes_and_help():
    listed = json.loads(run_cli(["--list-nodes"]).stdout)
    resize = next(n for n in listed if n["class_type"] == "GenArtResizeImage")
    assert resize["inputs"]["method"]["choices"] == ["bilinear", "bicubic", "nearest", "area"]
    assert "exit codes" in run_cli(["--help"]).stdout


def test_pack_cli_set_override_and_missing_file(tmp_path):
    proc = run_cli(["workflows/image-utilities.json", "--output-dir", str(tmp_path), "--quiet",
                    "--set", "4.filename_prefix=custom/name", "--set", "3.width=40"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "custom" / "name_00001_.png") as im:
        assert im.size == (40, 48)
    assert run_cli(["no-such-workflow.json"]).returncode == 2
    bad = run_cli(["workflows/image-utilities.json", "--set", "99.x=1"])
    assert bad.returncode == 2 and "no node '99'" in bad.stderr


def test_pack_cli_runtime_failure_exit_code_1(tmp_path):
    wf = tmp_path / "crop.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32}},
        "2": {"class_type": "GenArtCropImage", "inputs": {"image": ["1", 0], "x": 20, "width": 20, "height": 8}},
        "3": {"class_type": "GenArtSaveImage", "inputs": {"images": ["2", 0]}}}))
    proc = run_cli([str(wf), "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert proc.returncode == 1
    assert "node 2 (GenArtCropImage) failed" in proc.stderr and "does not fit the 32x32 image" in proc.stderr


def test_pack_cli_prints_written_files_and_reported_text(tmp_path):
    """Headless, as ComfyUI would show it: a metrics report's table on stderr, every file written on stdout."""
    prompt = {"1": {"class_type": "GenArtLoadImage", "inputs": {"image": "genart-example-emoji.png"}},
              "2": {"class_type": "GenArtMeasurePSNR", "inputs": {"image_a": ["1", 0], "image_b": ["1", 0],
                                                                 "label": "same image"}},
              "3": {"class_type": "GenArtMetricsReport", "inputs": {"metrics_1": ["2", 0], "filename_prefix": "r/x"}}}
    wf = tmp_path / "report.json"
    wf.write_text(json.dumps(prompt))
    out = tmp_path / "out"
    proc = run_cli([str(wf), "--output-dir", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out / "r" / "x_00001_.json"), str(out / "r" / "x_00001_.csv")]
    assert "node 3 (GenArtMetricsReport):\nlabel " in proc.stderr and "same image" in proc.stderr


def test_pack_cli_sweep_runs_every_value_reusing_what_does_not_change(tmp_path, pack):
    from comfyui_genart.graph.pngmeta import read_workflow_from_png

    out = tmp_path / "out"
    small = ["--set", "4.batch_size=1", "--set", "5.steps=2", "--output-dir", str(out), "--quiet"]
    proc = run_cli(["workflows/generate.json", *small, "--sweep", "5.seed=[3,4]", "--report", str(tmp_path / "r.json")])
    assert proc.returncode == 0, proc.stderr
    saved = [Path(line) for line in proc.stdout.splitlines()]
    assert [p.name for p in saved] == ["emoji_00001_.png", "emoji_00002_.png"]
    assert "run 2/2: 5.seed=4" in proc.stderr
    assert saved[0].read_bytes() != saved[1].read_bytes()
    assert [read_workflow_from_png(p)[0]["5"]["inputs"]["seed"] for p in saved] == [3, 4], "each PNG re-runs its own"
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [r["overrides"] for r in runs] == [["5.seed=3"], ["5.seed=4"]]
    second = {n["node_id"]: n["status"] for n in runs[1]["nodes"]}
    assert second["1"] == second["2"] == second["3"] == "cached", "the model loaders ran once"
    assert second["5"] == "ran"


def test_pack_cli_sweep_is_checked_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    base = ["workflows/generate.json", "--set", "4.batch_size=1", "--set", "5.steps=2", "--output-dir", str(out)]
    proc = run_cli([*base, "--sweep", "5.steps=[2,5000]"])
    assert proc.returncode == 2 and "(run with 5.steps=5000)" in proc.stderr and "bigger than max" in proc.stderr
    assert not out.exists(), "an invalid run in a sweep stops the whole sweep before the first run"
    for bad, why in (("5.seed=3", "a non-empty JSON list"), ("5.seed=[]", "a non-empty JSON list"),
                     ("5.seed=" + json.dumps(list(range(300))), "more than the limit of 256")):
        proc = run_cli([*base, "--sweep", bad])
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr


def test_pack_console_script_installed(tmp_path):
    script = shutil.which("genart", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the genart console script is not installed in this environment")
    proc = subprocess.run([script, str(REPO / "workflows" / "image-utilities.json"), "--output-dir",
                           str(tmp_path), "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "genart").glob("*.png"))) == 2


def test_pack_installed_wheel_runs_a_shipped_workflow_from_anywhere(tmp_path):
    """A non-editable install carries what the shipped workflows need (default model, example image,
    frontend extension, workflows) and finds it beside the installed package."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the shipped files")
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    package = site / "comfyui_genart"
    for shipped in ("input/genart-example-emoji.png", "web/genart.js", "models/vqgan/genart-emoji32/config.json",
                    "workflows/protect-image.json"):
        assert (package / shipped).is_file(), shipped
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import sys, comfyui_genart.graph.cli as cli; assert cli.__file__.startswith(sys.argv[1]), cli.__file__; "
            "sys.argv = sys.argv[1:]; sys.exit(cli.main())")
    proc = subprocess.run([sys.executable, "-c", code, str(site), str(package / "workflows" / "protect-image.json"),
                           "--quiet"], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert len(list((work / "output" / "genart").glob("protect_*.png"))) == 1


def readme_python_blocks() -> list[str]:
    import re

    section = re.search(r"## From Python\n(.*?)\n## ", (REPO / "README.md").read_text(), re.S).group(1)
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("index", range(3), ids=["run_workflow", "executor", "library"])
def test_pack_readme_python_examples_run(tmp_path, index):
    """The README's "From Python" blocks, run as written in a scratch folder holding the shipped workflows."""
    blocks = readme_python_blocks()
    assert len(blocks) == 3
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    proc = subprocess.run([sys.executable, "-c", blocks[index]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    if index == 0:
        assert out.startswith("torch.Size([8, 32, 32, 3]) emoji_00001_.png")
        assert (tmp_path / "output" / "generate" / "emoji_00001_.png").is_file()
    elif index == 1:
        first, second = out.splitlines()
        assert first == "1 ['1', '2', '3', '4', '5', '6', '7', '8'] torch.Size([4, 4, 16, 16])"
        assert second == "2 ['5', '6', '7', '8'] torch.Size([4, 4, 16, 16])", "the loaders ran once"
    else:
        within, accuracy = out.split()
        assert within == "True" and float(accuracy) < 1.0


def test_pack_readme_node_list_and_workflows_are_current():
    for tool in ("node_table.py", "build_workflows.py"):
        proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--check"], capture_output=True, text=True)
        assert proc.returncode == 0, f"run python tools/{tool}: {proc.stdout}{proc.stderr}"


def test_pack_shipped_workflows_convert_back_to_their_prompts(pack):
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.ui_format import ui_to_api

    info = object_info(pack.REGISTRY)
    sources = sorted((REPO / "workflows" / "api").glob("*.json"))
    assert {p.stem for p in sources} == {p.stem for p in (REPO / "workflows").glob("*.json")}
    for source in sources:
        name, prompt = source.stem, json.loads(source.read_text())
        converted = ui_to_api(json.loads((REPO / "workflows" / f"{name}.json").read_text()), info)
        assert strip_meta(converted) == strip_meta(prompt), name


def strip_meta(prompt: dict) -> dict:
    """Titles (_meta) are display only; the shipped API files may or may not carry them."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}
