"""Batches: --for-each items and their names, the manifest and --resume, failing items, local worker processes
(byte-identical to one process, a worker killed mid-item, Ctrl-C then --resume) and a Ray cluster on 127.0.0.1:
a head and a second node (each `ray start --block` in its own process group, stopped at the end by their process
ids), one actor on each, byte-identical to one process, a killed actor process costing nothing. The Ray test
skips when Ray is not installed (pip install 'comfyui-genart[ray]'). Every run here uses one torch thread per
process (conftest, and the workers' default), so outputs can be compared bit for bit."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

PROTECT = REPO / "workflows" / "protect-image.json"
# protect-image shrunk: 20 attack steps and 8 sampler steps (about 0.35 s an item on one core instead of 0.9 s)
SMALL = ["5.steps=20", "7.steps=8", "10.steps=8"]
FOR_EACH = "1.image=portfolio/*.png"


def make_images(folder: Path, count: int = 16, size: int = 32) -> list[str]:
    """`count` distinct RGB images: a coloured disc on a noisy background each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    yy, xx = np.mgrid[:size, :size]
    names = []
    for i in range(count):
        pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8) + 150
        cx, cy, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 10)
        pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
        name = f"art{i:02d}.png"
        Image.fromarray(pixels, "RGB").save(folder / name)
        names.append(name)
    return names


def tree(folder: Path) -> dict[str, bytes]:
    """Every output file under `folder` by relative path (manifest and summary left out: they hold timings)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".batch." not in p.name}


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pack):
    """protect-image over 16 images in this process, one item after another: the outputs every other way of
    running the batch must reproduce byte for byte."""
    from comfyui_genart.graph.batch import run_batch

    root = tmp_path_factory.mktemp("batch-reference")
    make_images(root / "input" / "portfolio")
    result = run_batch(PROTECT, for_each=[FOR_EACH], overrides=SMALL, input_dir=root / "input",
                       output_dir=root / "output", temp_dir=root / "temp")
    assert result.done == 16 and result.failed == 0
    files = tree(root / "output")
    assert len(files) == 48  # a grid PNG, a metrics JSON and CSV per item
    assert {"genart/protect_art00_00001_.json", "genart/protect_art15_00002_.png"} <= set(files)
    return root, files


def test_batch_items_are_named_after_their_file_and_values(tmp_path, pack):
    from comfyui_genart.graph.batch import item_prompt, plan_items
    from comfyui_genart.graph.workflow_io import WorkflowFileError

    folder = tmp_path / "input"
    for name in ("b.png", "a.png", "sub/c.png", ".hidden.png", "notes.txt", "a b(1).png", "a_b_1.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    items = plan_items(["1.image=**/*.png"], ["5.seed=[0,1]", "7.seed=[3]", "5.eps=[0.5]"], folder)
    assert [i.item for i in items[::2]] == ["a b(1).png", "a.png", "a_b_1.png", "b.png", "sub/c.png"]
    assert [dict(i.values) for i in items[:2]] == [{"5.seed": 0, "7.seed": 3, "5.eps": 0.5},
                                                  {"5.seed": 1, "7.seed": 3, "5.eps": 0.5}]
    assert items[2].name == "a_5-seed-0_7-seed-3_eps-0.5", "an input name two sweeps share is told apart by node"
    assert items[8].name == "sub-c_5-seed-0_7-seed-3_eps-0.5"
    first, second = items[0].name, items[4].name  # 'a b(1)' and 'a_b_1' both slug to 'a_b_1': told apart by a hash
    assert first != second and first.startswith("a_b_1_5-seed-0") and len({i.name for i in items}) == len(items)
    assert items[0].overrides == ['1.image="a b(1).png"', "5.seed=0", "7.seed=3", "5.eps=0.5"]
    (nested,) = plan_items(["1.image=sub/*.png"], [], folder)
    assert (nested.item, nested.name) == ("sub/c.png", "c"), "the pattern's own folder is left out of the name"

    prompt = json.loads((REPO / "workflows/api/protect-image.json").read_text())
    one = item_prompt(prompt, plan_items(["1.image=b.png"], [], folder)[0])
    assert one["1"]["inputs"]["image"] == "b.png"
    assert one["16"]["inputs"]["filename_prefix"] == one["26"]["inputs"]["filename_prefix"] == "genart/protect_b"
    assert prompt["16"]["inputs"]["filename_prefix"] == "genart/protect", "the workflow itself is left as it was"

    for spec, why in (("1.image=*.jpg", "no file in"), ("1.image=../*.png", "'..'"), ("image=*.png", "ID.INPUT=GLOB"),
                      ("1.image=", "ID.INPUT=GLOB"), ("1.image=/etc/*", "absolute")):
        with pytest.raises(WorkflowFileError, match=re.escape(why)):
            plan_items([spec], [], folder)


def test_batch_commit_keeps_identical_files_and_renumbers_others(tmp_path, pack):
    from comfyui_genart.graph.batch import commit_outputs

    out = tmp_path / "out"
    (out / "g").mkdir(parents=True)
    (out / "g" / "p_x_00001_.png").write_bytes(b"old image")
    (out / "g" / "p_x_00003_.json").write_bytes(b"old metrics")
    (out / "g" / "p_y_00001_.png").write_bytes(b"same")
    shipped = [("g/p_x_00001_.png", b"new image"), ("g/p_x_00001_.json", b"new metrics"),
               ("g/p_y_00001_.png", b"same"), ("model/config.json", b"{}")]
    assert commit_outputs(out, None, shipped) == ["g/p_x_00004_.png", "g/p_x_00004_.json", "g/p_y_00001_.png",
                                                  "model/config.json"]
    assert (out / "g" / "p_x_00001_.png").read_bytes() == b"old image", "nothing of an earlier run is replaced"
    assert (out / "g" / "p_x_00004_.json").read_bytes() == b"new metrics"


def crop_workflow(tmp_path: Path) -> Path:
    """Crop 20x20 at x=20 and save: fails at run time on an image narrower than 40 pixels."""
    wf = tmp_path / "crop.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "GenArtLoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "GenArtCropImage", "inputs": {"image": ["1", 0], "x": 20, "width": 20, "height": 8}},
        "3": {"class_type": "GenArtSaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "crops/c"}}}))
    return wf


def test_batch_failing_item_is_recorded_and_resume_retries_only_it(tmp_path, pack):
    from comfyui_genart.graph.batch import BatchError, run_batch

    folder = tmp_path / "input"
    folder.mkdir()
    for name, width in (("a.png", 48), ("b.png", 32), ("c.png", 48)):
        Image.new("RGB", (width, 16), (10, 20, 30)).save(folder / name)
    wf, out = crop_workflow(tmp_path), tmp_path / "out"
    kwargs = {"for_each": ["1.image=*.png"], "input_dir": folder, "output_dir": out, "temp_dir": tmp_path / "t"}
    first = run_batch(wf, **kwargs)
    assert (first.done, first.failed, first.ran) == (2, 1, 3)
    records = manifest_lines(out / "crop.batch.jsonl")
    assert [(r["item"], r["status"]) for r in records] == [("a.png", "done"), ("b.png", "failed"), ("c.png", "done")]
    assert "node 2 (GenArtCropImage) failed" in records[1]["error"] and records[1]["outputs"] == []
    assert records[0]["outputs"] == ["crops/c_a_00001_.png"] and records[0]["values"] == {}
    assert sorted(tree(out)) == ["crops/c_a_00001_.png", "crops/c_c_00001_.png"], "the failed item wrote nothing"
    summary = (out / "crop.batch.csv").read_text().splitlines()
    assert summary[0] == "item,name,status,seconds,attempts,outputs,error"
    assert summary[2].startswith("b.png,b,failed,")

    with pytest.raises(BatchError, match="pass --resume"):
        run_batch(wf, **kwargs)
    Image.new("RGB", (48, 16), (10, 20, 30)).save(folder / "b.png")
    second = run_batch(wf, resume=True, **kwargs)
    assert (second.done, second.failed, second.ran, second.skipped) == (3, 0, 1, 2)
    assert [(r["item"], r["status"]) for r in manifest_lines(out / "crop.batch.jsonl")][3:] == [("b.png", "done")]
    assert not (out / ".genart-staging").exists()


def test_batch_local_workers_match_one_process_survive_a_kill_and_resume_after_ctrl_c(tmp_path, reference):
    """--workers 2 as a subprocess: one worker is killed mid-item (its item runs again on the other, once), then
    Ctrl-C partway; --resume finishes. Every item ends in the manifest exactly once, the outputs equal the
    one-process run's byte for byte, and no partial file is left at any point."""
    ref_root, ref_files = reference
    work = tmp_path / "work"
    make_images(work / "input" / "portfolio")
    out = work / "output"
    command = [sys.executable, "-m", "graph.run", str(PROTECT), "--input-dir", str(work / "input"), "--output-dir",
               str(out), "--temp-dir", str(work / "temp"), "--for-each", FOR_EACH, "--workers", "2", "--quiet",
               *(a for s in SMALL for a in ("--set", s))]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    manifest = out / "protect-image.batch.jsonl"

    def wait_for(check, what, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not check():
            assert proc.poll() is None, f"the batch ended before {what}: {''.join(stderr)[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {''.join(stderr)[-3000:]}"
            time.sleep(0.05)

    def done_count() -> int:
        return len(manifest.read_text().splitlines()) if manifest.exists() else 0

    wait_for(lambda: sum(" ready (pid " in line for line in stderr) >= 2 and done_count() >= 2,
             "both workers and two items")
    # The worker that holds an item now: its pid is in its "ready" line.
    pids = {line.split()[1]: int(line.rsplit("pid ", 1)[1].rstrip(")\n")) for line in stderr if " ready (pid " in line}
    os.kill(pids["1"], signal.SIGKILL)
    # Ctrl-C as soon as the kill was seen and a third item is done: the other worker runs an item in 0.3 s, so a
    # later Ctrl-C could come after the batch ended on a busy machine.
    wait_for(lambda: "will run again" in "".join(stderr) and done_count() >= 3, "the retry and a third item")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    text = "".join(stderr)
    assert proc.returncode == 1 and "interrupted" in text and "--resume" in text, text[-3000:]
    assert "will run again (worker process 1 (pid" in text, "the killed worker's item went back to the queue"
    first = manifest_lines(manifest)
    assert 3 <= len(first) < 16, "Ctrl-C came before the end"
    assert all(r["status"] == "done" for r in first)
    listed = {rel for r in first for rel in r["outputs"]}
    assert set(tree(out)) == listed, "only the outputs of finished items are in the output folder"
    assert not (out / ".genart-staging").exists(), "interrupted items left no staging folder"

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"16/16 done, 0 failed, {len(first)} done before" in resumed.stderr
    assert resumed.stderr.count(": done in ") == 16 - len(first), "--resume ran only the items not done"
    records = manifest_lines(manifest)
    assert sorted(r["item"] for r in records) == [f"portfolio/art{i:02d}.png" for i in range(16)], \
        "every item exactly once: none ran twice, none was lost"
    assert tree(out) == ref_files
    assert not (out / ".genart-staging").exists()
    rows = (out / "protect-image.batch.csv").read_text().splitlines()
    assert rows[0].startswith("item,name,status,seconds,attempts,outputs,error,protected image/perturbation_linf,")
    assert len(rows) == 17 and all(",done," in row for row in rows[1:])
    ref_rows = (ref_root / "output" / "protect-image.batch.csv").read_text().splitlines()
    metric = rows[0].split(",").index("edit of protected vs clean/ssim")
    assert [r.split(",")[metric] for r in rows[1:]] == [r.split(",")[metric] for r in ref_rows[1:]]


def test_batch_cli_without_the_new_flags_is_unchanged(tmp_path, capsys, pack):
    """--sweep alone still runs in one process and writes no manifest; --validate-only counts a batch's items."""
    from comfyui_genart.graph.cli import main

    out = tmp_path / "out"
    assert main([str(REPO / "workflows" / "image-utilities.json"), "--output-dir", str(out), "--quiet", "--sweep",
                 "3.width=[40,44]"]) == 0
    assert "run 2/2: 3.width=44" in capsys.readouterr().err
    assert not list(out.rglob("*.batch.*")) and not (out / ".genart-staging").exists()
    make_images(tmp_path / "input" / "portfolio", count=3)
    assert main([str(PROTECT), "--input-dir", str(tmp_path / "input"), "--for-each", FOR_EACH, "--sweep",
                 "5.seed=[0,1]", "--validate-only"]) == 0
    assert "valid; 6 item(s) would run" in capsys.readouterr().out
    assert main([str(PROTECT), "--input-dir", str(tmp_path / "input"), "--for-each", "1.image=*.jpg"]) == 2
    assert "no file in" in capsys.readouterr().err
    assert main([str(PROTECT), "--input-dir", str(tmp_path / "input"), "--for-each", "99.image=**/*.png"]) == 2
    assert "--for-each 99.image=...: the workflow has no node '99'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- Ray

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args,
                                 "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats",
                                 "--dashboard-agent-listen-port", str(free_port()), "--block"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_started(node: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while b"Ray runtime started" not in log.read_bytes():
        assert node.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def stop_node(node: subprocess.Popen) -> None:
    """`ray start --block` stops its node's processes on SIGTERM; whatever is left of its group goes after."""
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(node.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray  # noqa: F401
    except ImportError as err:  # not installed, or an install that cannot load: the same skip
        pytest.skip(f"Ray is not importable ({err}); pip install 'comfyui-genart[ray]'")
    temp = Path(tempfile.mkdtemp(prefix="gr", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                                 "--ray-client-server-port", str(free_port()), "--temp-dir", str(temp)],
                                temp / "head.log", env))
        wait_started(nodes[0], temp / "head.log")
        nodes.append(start_node(["--address", f"127.0.0.1:{port}"], temp / "worker.log", env))
        wait_started(nodes[1], temp / "worker.log")
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)


def test_batch_ray_cluster_matches_one_process_and_survives_a_killed_worker(tmp_path, ray_cluster, reference,
                                                                          monkeypatch):
    from comfyui_genart.graph.batch import run_batch

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    _, ref_files = reference
    make_images(tmp_path / "input" / "portfolio")
    seen: dict[str, list] = {"ready": [], "done": [], "killed": []}

    def on_event(event: dict) -> None:
        kind = event["event"]
        if kind == "ready":
            seen["ready"].append(event["name"])
        elif kind == "done":
            seen["done"].append(event["record"]["worker"])
        elif kind == "start" and len(seen["done"]) >= 2 and not seen["killed"]:
            os.kill(event["pid"], signal.SIGKILL)  # the actor's process, just handed an item
            seen["killed"].append(event["item"].item)

    result = run_batch(PROTECT, for_each=[FOR_EACH], overrides=SMALL, executor="ray", ray_address=ray_cluster,
                       workers=2, on_event=on_event, input_dir=tmp_path / "input", output_dir=tmp_path / "output",
                       temp_dir=tmp_path / "temp")
    assert seen["killed"] and result.retried >= 1
    assert (result.done, result.failed) == (16, 0)
    records = manifest_lines(result.manifest)
    assert sorted(r["item"] for r in records) == [f"portfolio/art{i:02d}.png" for i in range(16)], \
        "every item exactly once, the killed worker's one included"
    nodes = {name.rsplit(" ", 1)[1] for name in seen["ready"]}
    assert len(nodes) == 2, f"one actor on each node: {seen['ready']}"
    assert tree(tmp_path / "output") == ref_files


def test_batch_ray_address_nobody_answers_fails_fast(tmp_path, capsys, pack):
    """A cluster address with nothing listening: a clear error in seconds (ray.init alone retries for minutes),
    exit 1, and no output folder or manifest left behind."""
    pytest.importorskip("ray")
    from comfyui_genart.graph.cli import main

    make_images(tmp_path / "input" / "portfolio", count=2)
    port = free_port()  # bound and closed again: nothing listens there
    started = time.monotonic()
    code = main([str(PROTECT), "--input-dir", str(tmp_path / "input"), "--for-each", FOR_EACH,
                 "--output-dir", str(tmp_path / "out"), "--ray", f"127.0.0.1:{port}"])
    assert code == 1 and time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in err and "ray start --head" in err
    assert not list((tmp_path / "out").rglob("*.batch.*"))
