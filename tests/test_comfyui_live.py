"""The pack inside a real ComfyUI server: loading, /object_info, running a prompt, validation errors.

Runs only when GENART_COMFYUI_DIR points to a ComfyUI checkout (the one this was written against is
v0.3.64); GENART_COMFYUI_PYTHON names its interpreter (default `<dir>/.venv/bin/python`). Skipped
otherwise. The checkout is never written to: the server gets `--base-directory` on a temp folder whose
custom_nodes/ holds a symlink `ComfyUI-GenArt` -> this repository (a dash in the name, as users clone
it), bytecode writing is off, and it listens on a free loopback port only.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-GenArt"
PYTHON_MODULE = f"custom_nodes.{PACK_FOLDER}"
START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 120.0
INPUT_IMAGE = "genart_live_input.png"


@dataclass
class Server:
    url: str
    base: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    python: Path  # ComfyUI's interpreter: the headless side of a comparison runs under the same torch

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body); a 4xx/5xx answer is returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path} -> {status}: {body}\n{self.tail()}"
        return body

    def tail(self, n: int = 60) -> str:
        return "--- ComfyUI log (tail) ---\n" + "\n".join(self.log().splitlines()[-n:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under the checkout, virtual environments and .git left out."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d != ".git" and not (Path(dirpath) / d / "pyvenv.cfg").exists()]
        for name in filenames:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = p.lstat()
                seen[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return seen


def _write_input_image(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (12, 10), (200, 40, 90)).save(path)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    setting = os.environ.get("GENART_COMFYUI_DIR")
    if not setting:
        pytest.skip("set GENART_COMFYUI_DIR to a ComfyUI checkout to run the live ComfyUI test")
    comfy_dir = Path(setting).expanduser().resolve()
    if not (comfy_dir / "main.py").is_file():
        pytest.fail(f"GENART_COMFYUI_DIR={setting} has no main.py: not a ComfyUI checkout")
    python = Path(os.environ.get("GENART_COMFYUI_PYTHON") or comfy_dir / ".venv" / "bin" / "python")
    if not python.is_file() or not os.access(python, os.X_OK):
        pytest.skip(f"ComfyUI's python not found at {python} (set GENART_COMFYUI_PYTHON)")

    base = tmp_path_factory.mktemp("comfyui-base")
    # ComfyUI's own input/ and models/ as they ship (its input/ holds a 768x768 example.png), copied so the
    # checkout stays untouched; then the test's own image and tiny models.
    for sub in ("input", "models"):
        shutil.copytree(comfy_dir / sub, base / sub)
    for sub in ("custom_nodes", "output", "temp", "user"):
        (base / sub).mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    _write_input_image(base / "input" / INPUT_IMAGE)
    from tiny_models import write_all

    write_all(base / "models")  # tiny diffusers models for the pipeline prompts

    port = _free_port()
    log_path = base / "comfyui.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # One CPU thread on both sides: float reductions then run in the same order, so pixels can be
    # compared bit for bit (with 1 vs 2 threads a few pixels of text-to-image differ by one level).
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [str(python), str(comfy_dir / "main.py"), "--cpu", "--disable-api-nodes", "--disable-auto-launch",
           "--database-url", "sqlite:///:memory:", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base)]
    before = _snapshot(comfy_dir)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", base, log_path, proc, python)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {proc.returncode} while starting\n{server.tail()}")
            try:
                with urllib.request.urlopen(server.url + "/system_stats", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S:.0f} s\n{server.tail()}")
            time.sleep(0.5)
        print(f"\nComfyUI up at {server.url} after {time.monotonic() - t0:.1f} s (log: {log_path})")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    changed = sorted(k for k, v in _snapshot(comfy_dir).items() if before.get(k) != v)
    changed += sorted(set(before) - set(_snapshot(comfy_dir)))
    assert not changed, f"the ComfyUI checkout was modified: {changed[:20]}"


@pytest.fixture(scope="module")
def object_info(comfyui: Server) -> dict[str, Any]:
    return comfyui.get("/object_info")


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, as in ComfyUI's HTTP answer."""
    return json.loads(json.dumps(value))


def _base_settings(base: Path) -> Any:
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.safety import Paths

    return RunSettings(paths=Paths(input_dir=base / "input", output_dir=base / "output", temp_dir=base / "temp",
                                   models_dirs=[base / "models"]))


def _assert_pack_log_clean(server: Server) -> None:
    log = server.log()
    ours = [line for line in log.splitlines() if PACK_FOLDER in line or "GenArt" in line]
    bad = [line for line in ours
           if "IMPORT FAILED" in line or "Cannot import" in line or "Skip " in line or "[ERROR]" in line]
    assert not bad, "ComfyUI complained about the pack:\n" + "\n".join(bad) + "\n" + server.tail()
    assert "Unable to parse pyproject.toml" not in log, server.tail()
    assert "Exception during processing" not in log, server.tail()


def test_pack_imports_under_a_dashed_folder_name(comfyui: Server) -> None:
    log = comfyui.log()
    loaded = [line for line in log.splitlines()
              if line.rstrip().endswith(f"custom_nodes/{PACK_FOLDER}") and "seconds" in line]
    assert loaded, f"no import-time line for {PACK_FOLDER} in ComfyUI's log\n{comfyui.tail()}"
    assert "IMPORT FAILED" not in loaded[0], loaded[0]
    _assert_pack_log_clean(comfyui)


def test_object_info_matches_our_input_types(comfyui: Server, object_info: dict[str, Any]) -> None:
    import comfyui_genart
    from comfyui_genart.graph.comfy import comfy_class, object_info_entry

    mappings = comfyui_genart.NODE_CLASS_MAPPINGS
    assert mappings, "the pack maps no node classes"
    missing = sorted(set(mappings) - set(object_info))
    assert not missing, f"GenArt nodes missing from ComfyUI's /object_info: {missing}"
    for name, cls in mappings.items():
        live = object_info[name]
        node_cls = cls.GENART_NODE
        spec = node_cls.spec
        # INPUT_TYPES as generated inside ComfyUI: file combos list ComfyUI's input / models folders.
        expected_inputs = _plain(comfy_class(node_cls, settings_factory=lambda: _base_settings(comfyui.base))
                                 .INPUT_TYPES())
        assert live["input"] == expected_inputs, name
        if not spec.file_inputs:
            assert live["input"] == _plain(cls.INPUT_TYPES()), name
        assert live["input_order"] == {k: list(v) for k, v in expected_inputs.items()}, name
        assert live["output"] == list(cls.RETURN_TYPES), name
        assert live["output_name"] == list(cls.RETURN_NAMES), name
        assert live["output_node"] is bool(cls.OUTPUT_NODE), name
        assert live["category"] == cls.CATEGORY, name
        assert live["description"] == cls.DESCRIPTION, name
        assert live["display_name"] == comfyui_genart.NODE_DISPLAY_NAME_MAPPINGS[name], name
        assert live["python_module"] == PYTHON_MODULE, name
        # The entry our UI-format converter uses in place of a live server must agree with the real one.
        assert live == _plain(object_info_entry(spec) | {"input": expected_inputs}), name

    # Inside ComfyUI our file combos list ComfyUI's input folder (here: the one image put there), then the
    # pack's own (the example image the shipped workflows load).
    image_combo = object_info["GenArtLoadImage"]["input"]["required"]["image"]
    stock = [p.name for p in (comfyui.base / "input").iterdir() if p.suffix == ".png"]
    assert "example.png" in stock, "ComfyUI's stock input folder ships example.png"
    assert image_combo[0] == sorted([*stock, "genart-example-emoji.png"]), image_combo
    assert image_combo[1].get("image_upload") is True
    _assert_pack_log_clean(comfyui)


def test_frontend_extension_is_served(comfyui: Server) -> None:
    """ComfyUI serves web/genart.js (WEB_DIRECTORY), the extension that shows reported text on the node."""
    url = f"/extensions/{PACK_FOLDER}/genart.js"
    assert url in comfyui.get("/extensions"), comfyui.tail()
    with urllib.request.urlopen(comfyui.url + url, timeout=30) as resp:
        assert resp.read() == (REPO / "web" / "genart.js").read_bytes()


def test_report_shows_on_its_node_in_the_real_frontend(comfyui: Server, tmp_path: Path) -> None:
    """ComfyUI's own frontend in headless Chromium runs robustness-table: the report node shows its table in
    the box web/genart.js adds, which stays out of the saved workflow and the prompt. Needs `node`, a
    Chromium and GENART_NODE_MODULES (a node_modules folder with puppeteer-core); skips otherwise."""
    import shutil

    node = shutil.which("node")
    chromium = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                     if (found := shutil.which(name))), None)
    modules = os.environ.get("GENART_NODE_MODULES", "")
    if not (node and chromium and modules and (Path(modules) / "puppeteer-core").is_dir()):
        pytest.skip("needs node, chromium and GENART_NODE_MODULES with puppeteer-core")
    done = subprocess.run([node, str(REPO / "tests" / "browser_report_check.mjs"), comfyui.url,
                           str(REPO / "workflows" / "robustness-table.json"), chromium, str(tmp_path / "ui.png")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + comfyui.tail()
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "genart_report" not in seen["before"], "no box before the node has run"
    text = seen["after"]["text"]
    assert text.startswith("label ") and "eps 16/255 + diffpure 0.3, adaptive (exact)" in text
    assert seen["after"]["readOnly"] is True and seen["after"]["shown"] is True
    assert seen["after"]["width"] > 300, "the node widens to show the table"
    assert seen["after"]["widgetsValues"] == ["genart/robustness"], "the box is not saved in the workflow"
    assert "genart_report" not in seen["promptInputs"], "nor sent as an input"
    # This frontend throws one error of its own at start-up (a settings onChange; also with no custom nodes).
    assert not [e for e in seen["errors"] if "genart" in e.lower()], seen["errors"]


def test_headless_standins_are_not_registered(object_info: dict[str, Any]) -> None:
    import comfyui_genart

    standins = [name for name, cls in comfyui_genart.REGISTRY.items() if cls.HEADLESS_ONLY]
    assert "LoadImage" in standins
    for name in standins:
        assert name not in comfyui_genart.NODE_CLASS_MAPPINGS, name
        if name in object_info:  # ComfyUI's own node of that name stays ComfyUI's
            assert not object_info[name]["python_module"].startswith("custom_nodes."), object_info[name]
    assert object_info["LoadImage"]["python_module"] == "nodes"
    assert object_info["SaveImage"]["python_module"] == "nodes"
    assert not any(k.startswith("GenArt") and k not in comfyui_genart.NODE_CLASS_MAPPINGS for k in object_info)


def _pipeline(width: int = 24, height: int = 20, prefix: str = "live/genart") -> dict[str, Any]:
    return {
        "1": {"class_type": "GenArtPatternImage",
              "inputs": {"pattern": "checkerboard", "width": 48, "height": 40, "batch_size": 2, "cell": 6,
                         "red": 0.9, "green": 0.3, "blue": 0.1},
              "_meta": {"title": "pattern"}},
        "2": {"class_type": "GenArtResizeImage",
              "inputs": {"image": ["1", 0], "width": width, "height": height, "method": "bilinear"}},
        "3": {"class_type": "GenArtSaveImage",
              "inputs": {"images": ["2", 0], "filename_prefix": prefix, "embed_workflow": True}},
    }


def _wait_for_history(server: Server, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert server.proc.poll() is None, f"ComfyUI died while running the prompt\n{server.tail()}"
        history = server.get(f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
            return entry
        time.sleep(0.25)
    pytest.fail(f"prompt {prompt_id} not done within {timeout:.0f} s\n{server.tail()}")


def test_prompt_runs_and_saves_a_runnable_png(comfyui: Server, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    import comfyui_genart
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.graph.pngmeta import read_workflow_from_png

    prompt = _pipeline()
    workflow = {"last_node_id": 3, "last_link_id": 2, "nodes": [], "links": [], "version": 0.4,
                "extra": {"genart_live_test": True}}
    status, answer = comfyui.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex,
                                                          "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    assert status == 200, f"{answer}\n{comfyui.tail()}"
    assert answer["node_errors"] == {}
    entry = _wait_for_history(comfyui, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{comfyui.tail()}"
    assert entry["status"]["completed"] is True

    images = entry["outputs"]["3"]["images"]
    assert [(r["subfolder"], r["type"]) for r in images] == [("live", "output")] * 2, images
    assert [r["filename"] for r in images] == ["genart_00001_.png", "genart_00002_.png"], images
    files = [comfyui.output_dir / r["subfolder"] / r["filename"] for r in images]
    for path in files:
        assert path.is_file(), path
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (24, 20) and im.mode == "RGB", (path, im.size, im.mode)
        saved_prompt, saved_workflow = read_workflow_from_png(path)
        assert saved_prompt == prompt, "the PNG's `prompt` tEXt chunk is not the prompt that ran"
        assert saved_workflow == workflow, "the PNG's `workflow` tEXt chunk is not the one sent"
    with urllib.request.urlopen(f"{comfyui.url}/view?filename={images[0]['filename']}&subfolder=live&type=output",
                                timeout=30) as resp:
        assert resp.read() == files[0].read_bytes()

    # The same prompt headless, in this process: the same pixels.
    settings = _base_settings(tmp_path)
    for sub in ("input", "output", "temp", "models"):
        (tmp_path / sub).mkdir()
    report = Executor(comfyui_genart.REGISTRY, settings).run(prompt, workflow)
    headless = report.ui["3"]["images"]
    assert [r["filename"] for r in headless] == [r["filename"] for r in images]
    for record, live_path in zip(headless, files, strict=True):
        headless_path = tmp_path / "output" / record["subfolder"] / record["filename"]
        with Image.open(headless_path) as a, Image.open(live_path) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{record['filename']} differs headless vs ComfyUI"
    _assert_pack_log_clean(comfyui)


def test_invalid_prompt_gets_comfyui_validation_error(comfyui: Server) -> None:
    import comfyui_genart
    from comfyui_genart.graph.errors import WorkflowInvalid
    from comfyui_genart.graph.executor import Executor

    prompt = _pipeline()
    prompt["1"]["inputs"]["width"] = 9000  # max is 8192
    status, body = comfyui.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert set(body["node_errors"]) == {"1"}, body["node_errors"]
    node = body["node_errors"]["1"]
    assert node["class_type"] == "GenArtPatternImage"
    assert node["dependent_outputs"] == ["3"]
    (err,) = node["errors"]
    assert err["type"] == "value_bigger_than_max", err
    assert err["message"] == "Value 9000 bigger than max of 8192"
    assert err["details"] == "width"
    assert err["extra_info"]["input_name"] == "width"
    assert err["extra_info"]["received_value"] == 9000
    assert err["extra_info"]["input_config"][0] == "INT"
    assert err["extra_info"]["input_config"][1]["max"] == 8192

    # Our headless validator answers in the same shape.
    with pytest.raises(WorkflowInvalid) as info:
        Executor(comfyui_genart.REGISTRY).validate(prompt)
    ours = info.value.to_json()
    assert ours["error"]["type"] == body["error"]["type"]
    assert set(ours["node_errors"]) == {"1"}
    assert ours["node_errors"]["1"]["class_type"] == node["class_type"]
    assert ours["node_errors"]["1"]["dependent_outputs"] == node["dependent_outputs"]
    (our_err,) = ours["node_errors"]["1"]["errors"]
    assert (our_err["type"], our_err["message"], our_err["details"]) == (err["type"], err["message"], err["details"])
    for key in ("input_name", "received_value"):
        assert our_err["extra_info"][key] == err["extra_info"][key], key
    _assert_pack_log_clean(comfyui)


def _headless(server: Server, prompt: dict[str, Any], out: Path, timeout: float = RUN_TIMEOUT_S,
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run `prompt` with `python -m graph.run` under ComfyUI's own interpreter (same torch as the server, one
    thread), on the server's input and models folders; the run report."""
    (out / "prompt.json").write_text(json.dumps(prompt))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([str(server.python), "-m", "graph.run", str(out / "prompt.json"), "--quiet",
                           "--input-dir", str(server.base / "input"), "--models-dir", str(server.base / "models"),
                           "--output-dir", str(out / "output"), "--temp-dir", str(out / "temp"),
                           "--report", str(out / "report.json"), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text())


def _seconds_in_comfyui(entry: dict[str, Any]) -> float:
    stamps = {kind: data["timestamp"] for kind, data in entry["status"]["messages"] if "timestamp" in data}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


@pytest.mark.parametrize("name", ["unconditional", "text-to-image", "vq-round-trip", "protect-image", "purify-image",
                                  "noise-strengths", "generate-gan", "gan-layer-noise"])
def test_pipeline_workflow_same_pixels_in_comfyui_and_headless(comfyui: Server, tmp_path: Path, name: str) -> None:
    """A shipped workflow (model loaders, sampler, decoders) run by ComfyUI and by our runner, with ComfyUI's
    stock input folder present: the pack's own example image is the one loaded, and the run takes about as
    long inside ComfyUI as headless."""
    import numpy as np
    from PIL import Image

    prompt = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    for node in prompt.values():  # outputs of each run under their own prefix
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"live-{name}/out"
    status, answer = comfyui.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and answer["node_errors"] == {}, f"{answer}\n{comfyui.tail()}"
    entry = _wait_for_history(comfyui, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{comfyui.tail()}"

    report = _headless(comfyui, prompt, tmp_path)
    in_comfyui = _seconds_in_comfyui(entry)
    print(f"\n{name}: {in_comfyui:.2f} s in ComfyUI, {report['seconds']:.2f} s headless")
    assert in_comfyui < 3 * report["seconds"] + 5, f"{name} is far slower inside ComfyUI: is it reading other inputs?"
    for node_id, node in prompt.items():  # the text web/genart.js shows on a report node reaches the browser
        if node["class_type"] == "GenArtMetricsReport":
            assert entry["outputs"][node_id]["text"] == report["ui"][node_id]["text"], name
    saved = [(node_id, r) for node_id, out in entry["outputs"].items() for r in out.get("images", [])
             if r["type"] == "output"]
    assert saved, f"{name}: ComfyUI saved no image"
    for node_id, record in saved:
        (headless,) = [r for r in report["ui"][node_id]["images"] if r["filename"] == record["filename"]]
        live_path = comfyui.output_dir / record["subfolder"] / record["filename"]
        with Image.open(live_path) as a, Image.open(tmp_path / "output" / headless["subfolder"] /
                                                    headless["filename"]) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name}: {record['filename']} differs"
    _assert_pack_log_clean(comfyui)


def test_evaluation_gives_the_same_figures_in_comfyui_and_headless(comfyui: Server, tmp_path: Path) -> None:
    """The evaluate-default-model workflow (shrunk, on a test folder in ComfyUI's input/): the dataset folder is
    a typed name there (no file list), the metrics report and both grids equal the headless run's."""
    import numpy as np
    from PIL import Image

    from conftest import emoji_like_folder, evaluation_prompt

    emoji_like_folder(comfyui.base / "input" / "genart-eval-test", count=24, size=32)
    prompt = evaluation_prompt("genart-eval-test")
    for node in prompt.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = "live-evaluate/" + node["inputs"]["filename_prefix"].split("/")[-1]
    status, answer = comfyui.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and answer["node_errors"] == {}, f"{answer}\n{comfyui.tail()}"
    entry = _wait_for_history(comfyui, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{comfyui.tail()}"
    report = _headless(comfyui, prompt, tmp_path)
    (report_id,) = [i for i, n in prompt.items() if n["class_type"] == "GenArtMetricsReport"]
    assert entry["outputs"][report_id]["text"] == report["ui"][report_id]["text"]
    assert "frechet_distance" in entry["outputs"][report_id]["text"][0]
    saved = [(i, r) for i, out in entry["outputs"].items() for r in out.get("images", []) if r["type"] == "output"]
    assert len(saved) == 2, "the samples grid and the memorization grid"
    for node_id, record in saved:
        (headless,) = report["ui"][node_id]["images"]
        with Image.open(comfyui.output_dir / record["subfolder"] / record["filename"]) as a, \
                Image.open(tmp_path / "output" / headless["subfolder"] / headless["filename"]) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), record["filename"]
    _assert_pack_log_clean(comfyui)


# ---------------------------------------------------------------------------------------------------
# ComfyUI's own models through the bridges, and ComfyUI's default workflow headless, on a random full-size SD 1.5

SD15_NAME = "v1-5-pruned-emaonly-fp16.safetensors"  # the name ComfyUI's default workflow loads
SD15_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def random_sd15(comfyui: Server) -> Path:
    """A seeded random SD 1.5 (float16, ~2.1 GB) in GENART_SD15_CACHE (default: <tmp>/genart-sd15), built once and
    reused; linked into the server's models/checkpoints under the default workflow's checkpoint name."""
    import tempfile

    from comfyui_genart.core.formats.sd1_export import write_random_sd15

    cache = Path(os.environ.get("GENART_SD15_CACHE") or Path(tempfile.gettempdir()) / "genart-sd15")
    path = write_random_sd15(cache / "v1-5-random-seed0-fp16.safetensors", seed=0)
    link = comfyui.base / "models" / "checkpoints" / SD15_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(path)
    return path


def _png_pixels(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).astype(np.float64)


def _psnr(a: Any, b: Any) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _run_both(server: Server, prompt: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    status, answer = server.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and answer["node_errors"] == {}, f"{answer}\n{server.tail()}"
    entry = _wait_for_history(server, answer["prompt_id"], SD15_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.tail()}"
    return entry, _headless(server, prompt, out, SD15_TIMEOUT_S)


def _saved(server: Server, entry: dict[str, Any], report: dict[str, Any], out: Path, node_id: str
           ) -> tuple[Path, Path]:
    (live,) = entry["outputs"][node_id]["images"]
    (headless,) = report["ui"][node_id]["images"]
    return (server.output_dir / live["subfolder"] / live["filename"],
            out / "output" / headless["subfolder"] / headless["filename"])


def test_comfyui_vae_through_the_bridge_protects_an_image(comfyui: Server, random_sd15: Path, tmp_path: Path) -> None:
    """ComfyUI's Load Checkpoint -> GenArt Autoencoder From VAE -> GenArt Attack Encoder PGD, inside ComfyUI's
    inference mode: the protected image moves that checkpoint's VAE latent further than random noise of the same
    size, and headless (the stand-in loader) gives the same pixels."""
    import torch

    from comfyui_genart.core.formats.sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS, load_sd1_checkpoint

    prompt = {
        "1": {"class_type": "GenArtPatternImage", "inputs": {"pattern": "checkerboard", "width": 64, "height": 64,
                                                               "batch_size": 1, "cell": 8, "red": 0.9, "green": 0.3,
                                                               "blue": 0.1}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_NAME}},
        "3": {"class_type": "GenArtAutoencoderFromVAE", "inputs": {"vae": ["2", 2]}},
        "4": {"class_type": "GenArtAttackEncoderPGD", "inputs": {
            "image": ["1", 0], "autoencoder": ["3", 0], "target": "zero", "norm": "linf", "eps": 16 / 255,
            "step_size": 2 / 255, "steps": 10, "schedule": "constant", "random_start": True, "seed": 0,
            "eot_samples": 1, "eot_transform": "none", "eot_strength": 0.05, "defense_gradient": "bpda"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "live-protect/adv"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "live-protect/clean"}},
    }
    entry, report = _run_both(comfyui, prompt, tmp_path)
    live_adv, headless_adv = _saved(comfyui, entry, report, tmp_path, "5")
    live_clean, _ = _saved(comfyui, entry, report, tmp_path, "6")
    assert _psnr(_png_pixels(live_adv), _png_pixels(headless_adv)) == math.inf, "protected image differs"
    models = load_sd1_checkpoint(random_sd15, "random-sd15", SHIPPED_CONFIGS / SD15_CONFIG, False,
                                 torch.device("cpu"), torch.float32)
    clean = torch.from_numpy(_png_pixels(live_clean) / 255).float().permute(2, 0, 1)[None]
    adv = torch.from_numpy(_png_pixels(live_adv) / 255).float().permute(2, 0, 1)[None]
    noisy = clean + (16 / 255) * torch.sign(torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)))
    assert (adv - clean).abs().max() <= 16 / 255 + 1 / 255
    with torch.no_grad():
        def latent(x: torch.Tensor) -> torch.Tensor:
            return models.vae.encode(x.clamp(0, 1) * 2 - 1).latent_dist.mean

        z = latent(clean)
        moved, by_noise = float((latent(adv) - z).norm()), float((latent(noisy) - z).norm())
        toward_zero = float(latent(adv).norm()) / float(z.norm())
    print(f"\nencoder attack on ComfyUI's VAE: latent moved {moved:.2f} (random sign noise: {by_noise:.2f}), "
          f"|z_adv| / |z| = {toward_zero:.3f}")
    assert moved > 2 * by_noise and toward_zero < 0.9


def test_comfyui_model_through_the_bridge_equals_genart_loader(comfyui: Server, random_sd15: Path,
                                                                tmp_path: Path) -> None:
    """ComfyUI MODEL -> GenArt Denoiser From MODEL -> GenArt Sample Latent equals GenArt Load SD1.5 Checkpoint's
    denoiser on the same file and scheduler, bit for bit (the bridge converts into the same diffusers classes), and
    gives the same pixels in ComfyUI and headless (stand-ins). With ComfyUI's own CLIP Text Encode (a different CLIP
    implementation than headless, ~3e-6 apart) the images agree to a PSNR quoted here."""
    prompt: dict[str, Any] = {
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_NAME}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "GenArtConditioningFromComfy", "inputs": {"positive": ["3", 0], "negative": ["4", 0]}},
        "6": {"class_type": "GenArtLoadSD15Checkpoint", "inputs": {
            "ckpt_name": SD15_NAME, "config": "stable-diffusion-v1-5", "use_ema": False, "device": "auto",
            "dtype": "float32"}},
        "7": {"class_type": "GenArtDenoiserFromModel", "inputs": {"model": ["2", 0], "kind": "Euler"}},
        "8": {"class_type": "GenArtEmptyLatent", "inputs": {"width": 128, "height": 128, "downscale_factor": 8,
                                                            "channels": 4, "batch_size": 1}},
        "9": {"class_type": "GenArtLoadScheduler", "inputs": {
            "kind": "Euler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "beta_end": 0.012, "prediction_type": "epsilon", "clip_sample": False}},
        "12": {"class_type": "GenArtEncodeText", "inputs": {"text_encoder": ["6", 2], "prompt": "a glass bottle",
                                                            "negative_prompt": ""}},
        "13": {"class_type": "GenArtAutoencoderFromVAE", "inputs": {"vae": ["2", 2]}},
    }
    runs = (("10", ["7", 0], ["12", 0], ["13", 0], "bridged"), ("11", ["6", 1], ["12", 0], ["6", 0], "own"),
            ("14", ["7", 0], ["5", 0], ["13", 0], "comfy-clip"))
    for node_id, denoiser, conditioning, autoencoder, prefix in runs:
        prompt[node_id] = {"class_type": "GenArtSampleLatent", "inputs": {
            "denoiser": denoiser, "scheduler": ["9", 0], "latent": ["8", 0], "conditioning": conditioning,
            "seed": 1, "steps": 3, "cfg": 7.5, "denoise": 1.0, "start_step": 0, "end_step": -1, "add_noise": True,
            "return_trajectory_every": 0}}
        prompt[node_id + "1"] = {"class_type": "GenArtDecodeKL", "inputs": {"autoencoder": autoencoder,
                                                                            "latent": [node_id, 0]}}
        prompt[node_id + "2"] = {"class_type": "SaveImage", "inputs": {"images": [node_id + "1", 0],
                                                                       "filename_prefix": f"live-bridge/{prefix}"}}
    entry, report = _run_both(comfyui, prompt, tmp_path)
    bridged_live, bridged_headless = _saved(comfyui, entry, report, tmp_path, "102")
    own_live, own_headless = _saved(comfyui, entry, report, tmp_path, "112")
    comfy_live, comfy_headless = _saved(comfyui, entry, report, tmp_path, "142")
    assert _psnr(_png_pixels(bridged_live), _png_pixels(own_live)) == math.inf, "bridge vs own loader in ComfyUI"
    assert _psnr(_png_pixels(bridged_live), _png_pixels(bridged_headless)) == math.inf, "ComfyUI vs headless"
    assert _psnr(_png_pixels(own_live), _png_pixels(own_headless)) == math.inf
    psnr = _psnr(_png_pixels(comfy_live), _png_pixels(comfy_headless))
    print(f"\nbridged MODEL with ComfyUI's CLIP Text Encode vs the headless stand-in: PSNR {psnr:.1f} dB")
    assert psnr >= 40.0


def _template(server: Server, name: str) -> dict[str, Any]:
    """One of ComfyUI's workflow templates (UI format) from the comfyui-workflow-templates package that this
    ComfyUI pins (0.1.95 for v0.3.64): `default` (text-to-image) or `image2image`."""
    found = subprocess.run([str(server.python), "-c", "import comfyui_workflow_templates as t, os; "
                            f"print(os.path.join(os.path.dirname(t.__file__), 'templates', '{name}.json'))"],
                           capture_output=True, text=True, timeout=60)
    if found.returncode != 0 or not Path(found.stdout.strip()).is_file():
        pytest.skip(f"comfyui-workflow-templates (with templates/{name}.json) is not installed beside this ComfyUI")
    return json.loads(Path(found.stdout.strip()).read_text())


# Per workflow: the node that saves its image, the settings that shrink it for a CPU test run, and what runs as
# shipped. ComfyUI's templates, and GenArt's own workflow built on ComfyUI's Load Checkpoint.
TEMPLATES = {
    "default": ("9", ("5.width=256", "5.height=256", "3.steps=4"), "512x512, euler, 20 steps"),
    # ComfyUI's input/example.png (768x768) scaled to 0.25 MP = 512x512, dpmpp_2m, 20 steps at denoise 0.87;
    # shrunk: 0.0625 MP = 256x256 and 4 steps
    "image2image": ("9", ("18.megapixels=0.0625", "3.steps=4"), "512x512, dpmpp_2m, 20 steps, denoise 0.87"),
    # example.png at 512x512, PGD 50 steps on the checkpoint's VAE, the same 20-step edit of both at denoise 0.6
    "protect-your-checkpoint": ("18", ("3.width=128", "3.height=128", "5.steps=5", "10.steps=4", "11.steps=4"),
                                "512x512, PGD 50 steps, 20 steps at denoise 0.6"),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_workflow_headless_agrees_with_comfyui(comfyui: Server, random_sd15: Path, tmp_path: Path,
                                                        object_info: dict[str, Any], name: str) -> None:
    """ComfyUI's default text-to-image template and its image2image template, and GenArt's protect-your-checkpoint
    workflow, run in ComfyUI and headless (`python -m graph.run` on the UI file, the stand-ins, ComfyUI's own
    input/example.png), and their images agree on the same checkpoint and seed to >= 40 dB PSNR. As shipped with
    GENART_LIVE_SD15_FULL=1; else shrunk (--set)."""
    from comfyui_genart.graph.ui_format import ui_to_api

    shipped_file = REPO / "workflows" / f"{name}.json"
    workflow = json.loads(shipped_file.read_text()) if shipped_file.is_file() else _template(comfyui, name)
    save_id, shrink, shipped = TEMPLATES[name]
    full = os.environ.get("GENART_LIVE_SD15_FULL") == "1"
    sets = () if full else shrink
    prompt = ui_to_api(workflow, object_info)  # ComfyUI's own schemas convert it for the server
    for item in sets:
        key, value = item.split("=")
        node_id, input_name = key.split(".")
        prompt[node_id]["inputs"][input_name] = json.loads(value)
    (tmp_path / f"{name}.json").write_text(json.dumps(workflow))
    status, answer = comfyui.request("POST", "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex,
                                                          "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    assert status == 200 and answer["node_errors"] == {}, f"{answer}\n{comfyui.tail()}"
    entry = _wait_for_history(comfyui, answer["prompt_id"], SD15_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{comfyui.tail()}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    args = [str(comfyui.python), "-m", "graph.run", str(tmp_path / f"{name}.json"), "--quiet",
            "--models-dir", str(comfyui.base / "models"), "--input-dir", str(comfyui.base / "input"),
            "--output-dir", str(tmp_path / "output"), "--temp-dir", str(tmp_path / "temp"),
            "--report", str(tmp_path / "report.json")]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=SD15_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    live, headless = _saved(comfyui, entry, report, tmp_path, save_id)
    psnr = _psnr(_png_pixels(live), _png_pixels(headless))
    size = shipped if full else ", ".join(sets)
    print(f"\n{name} template ({size}): headless vs ComfyUI PSNR {psnr:.1f} dB; "
          f"{_seconds_in_comfyui(entry):.1f} s in ComfyUI, {report['seconds']:.1f} s headless")
    assert psnr >= 40.0
