"""Where a batch's items run: in this process, in N local worker processes, or in Ray actors on a cluster.

Every worker, whatever the backend, is a `Worker`: it loads the pack once, keeps one output cache across the
items it runs (model loaders run once per process) and runs each item's prompt with its output folder set to a
private staging folder. What the item wrote there is handed back (moved by the coordinator on this machine,
or shipped as bytes from a Ray node), so an item that dies half way leaves nothing in the output folder.

A backend turns workers into events for the coordinator (graph.batch): ("ready", worker, info) when a worker
can take an item, ("result", worker, result) when it finished one, ("died", worker, reason) when its process
went away (the item it held is the coordinator's to retry).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .cache import OutputCache

# A worker process starts with nothing of ours importable by name when the pack is a ComfyUI checkout that was
# never pip-installed (`python -m graph.run` loads it by path). So it loads the pack the way graph/run.py does,
# with the standard library alone: this source runs in a fresh `python -c` (local workers) and in a Ray actor.
BOOTSTRAP = r'''
import importlib, importlib.util, os, sys

def load_pack(root, name):
    """The pack as module `name`: from the folder `root` when this machine has it (the coordinator's own copy),
    else the installed package."""
    if name in sys.modules:
        return sys.modules[name]
    init = os.path.join(root, "__init__.py")
    if not os.path.isfile(init):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
'''

PACK_NAME = __name__.rsplit(".graph.", 1)[0]
PACK_ROOT = str(Path(__file__).resolve().parent.parent)
STAGING = ".genart-staging"  # inside the output folder: items being written by local workers


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to rebuild the run settings in its own process (plain values: it travels by pickle)."""

    input_dir: str
    output_dir: str
    temp_dir: str
    models_dirs: tuple[str, ...]
    device: str = "auto"
    dtype: str = "float32"
    allow_any_path: bool = False
    cache_dir: str | None = None
    threads: int | None = None  # torch intra-op threads in the worker; None leaves torch's default
    progress: bool = False
    cache_bytes: int = 4 << 30


class ItemCache(OutputCache):
    """The output cache of a batch worker. What an item computed stays for the next item only if that item reads
    it (model loaders, the encoding of a file its sweep values share); the rest is dropped once the next item is
    done, so a worker holds about two items' intermediates however long the batch, within the byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        super().__init__(budget_bytes)
        self._previous: set[str] = set()  # put by the item before, not read since
        self._fresh: set[str] = set()  # put by this item

    def get(self, key: str) -> Any:
        found = super().get(key)
        if found is not None:
            self._previous.discard(key)
        return found

    def put(self, key: str, outputs: Any, size: int | None = None) -> None:
        super().put(key, outputs, size)
        self._fresh.add(key)

    def item_done(self) -> None:
        for key in self._previous:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.used -= entry[1]
        self._previous, self._fresh = self._fresh, set()


class Worker:
    """Runs items in the current process: one registry, one cache, one settings object for all of them."""

    def __init__(self, config: WorkerConfig | dict[str, Any], name: str = "inline") -> None:
        import torch

        from .api import make_settings, registry
        from .cache import DiskCache

        if isinstance(config, dict):
            config = WorkerConfig(**config)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.name = name
        self.settings = make_settings(input_dir=config.input_dir, output_dir=config.output_dir,
                                      temp_dir=config.temp_dir, models_dirs=config.models_dirs, device=config.device,
                                      dtype=config.dtype, allow_any_path=config.allow_any_path,
                                      progress=config.progress)
        self.registry = registry()
        self.cache = ItemCache(config.cache_bytes)
        self.disk_cache = DiskCache(Path(config.cache_dir)) if config.cache_dir else None

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker": self.name}

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one item: `task` holds its prompt, the UI workflow (embedded in PNGs), `staging_root` (where this
        item's private output folder goes; None: the system's temp folder) and `ship` (return the files' bytes,
        for a coordinator on another machine). Never raises for the item's own failures: they come back as
        status 'failed' with the error."""
        from .context import Interrupted
        from .errors import NodeExecutionError, WorkflowInvalid
        from .executor import Executor

        staging = _staging_folder(task.get("staging_root"))
        settings = replace(self.settings, paths=replace(self.settings.paths, output_dir=staging))
        executor = Executor(self.registry, settings, cache=self.cache, disk_cache=self.disk_cache)
        started = time.perf_counter()
        result: dict[str, Any] = {"worker": self.name, "pid": os.getpid(), "staging": str(staging)}
        try:
            report = executor.run(task["prompt"], task.get("workflow"))
        except (KeyboardInterrupt, Interrupted):
            shutil.rmtree(staging, ignore_errors=True)
            raise  # the batch stops; nothing of this item is kept
        except Exception as err:  # noqa: BLE001 - any failure of the item is the item's record, the batch goes on
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, WorkflowInvalid):
                message = err.summary()
            elif isinstance(err, NodeExecutionError):
                message = str(err)
            else:  # an input that went away, a bug: say what
                message = "".join(traceback.format_exception_only(err)).strip()
            return {**result, "status": "failed", "error": message, "files": [], "metrics": {},
                    "seconds": time.perf_counter() - started}
        finally:
            self.cache.item_done()
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                       if p.is_file() and not p.name.startswith(".tmp-"))
        if task.get("ship"):
            shipped = [(rel, (staging / rel).read_bytes()) for rel in files]
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shipped = [(rel, None) for rel in files]
        return {**result, "status": "done", "error": None, "files": shipped, "metrics": _metrics(report.ui),
                "seconds": time.perf_counter() - started}


def _staging_folder(root: str | None) -> Path:
    """A new private folder for one item, named after this process (`<pid>-<random>`), in `root` (None: the
    system's temp folder); made again if another batch removed an empty `root` meanwhile."""
    for attempt in range(3):
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root or None))
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _metrics(ui: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's measurements as {"label/metric": value}, from the metrics reports' UI entries (ComfyUI's 'ui'
    payload); prefixed with the node id when the workflow has several reports."""
    reports = [(node_id, entry["metrics"]) for node_id, entry in ui.items() if entry.get("metrics")]
    out: dict[str, Any] = {}
    for node_id, measurements in reports:
        for m in measurements:
            name = f"{m['label']}/{m['metric']}" if m.get("label") else str(m["metric"])
            out[f"{node_id}:{name}" if len(reports) > 1 else name] = m["value"]
    return out


def remove_stale_staging(root: Path, pids: set[int] | None = None, drop_root: bool = False) -> None:
    """Drop staging folders of the given worker processes (all whose process is gone when None), and `root`
    itself when `drop_root` and it is empty."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pids is not None and pid not in pids:
            continue
        if pids is None and (os.name != "posix" or _alive(pid)):
            continue  # Windows: os.kill(pid, 0) would send a Ctrl-C event, so nothing is judged stale there
        shutil.rmtree(entry, ignore_errors=True)
    if drop_root:
        with contextlib.suppress(OSError):
            root.rmdir()  # only when empty


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------- backends

Event = tuple[str, int, Any]


class InlineBackend:
    """One worker: this process. Items run when the coordinator asks for the next event."""

    kind = "inline"
    ships = False

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker: Worker | None = None
        self._events: list[Event] = []
        self._task: dict[str, Any] | None = None

    def start(self) -> None:
        self.worker = Worker(self.config)
        self._events.append(("ready", 0, self.worker.info()))

    @property
    def size(self) -> int:
        return 1

    def alive(self) -> bool:
        return True

    def submit(self, wid: int, task: dict[str, Any]) -> None:
        self._task = task

    def next_event(self) -> Event:
        if self._events:
            return self._events.pop(0)
        assert self.worker is not None and self._task is not None
        task, self._task = self._task, None
        return ("result", 0, self.worker.run(task))

    def close(self, abort: bool = False) -> None:
        self.worker = None


def _send(stream: Any, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def serve_process() -> None:
    """A local worker process's loop: messages in on stdin, out on the original stdout (the nodes' own prints go
    to stderr). The coordinator alone handles Ctrl-C (SIGINT is ignored here): it stops the workers itself."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inbox = sys.stdin.buffer
    config, name = _receive(inbox)
    try:
        worker = Worker(config, name)
    except BaseException:  # whatever stops the start is told to the coordinator, then re-raised
        _send(channel, ("error", traceback.format_exc()))
        raise
    _send(channel, ("ready", worker.info()))
    while True:
        message = _receive(inbox)
        if message is None or message[0] == "stop":
            return
        _send(channel, ("result", worker.run(message[1])))


@dataclass
class _Slot:
    process: subprocess.Popen[bytes] | None = None
    generation: int = 0
    ready: bool = False
    dead: bool = False  # failed to start: not replaced
    pids: set[int] = field(default_factory=set)


class ProcessBackend:
    """N local worker processes (`python -c BOOTSTRAP`), each loading the pack once. A worker that dies is
    replaced; one that fails to start is not (the coordinator stops when none is left)."""

    kind = "processes"
    ships = False

    def __init__(self, config: WorkerConfig, workers: int) -> None:
        self.config, self.workers = config, workers
        self.slots = [_Slot() for _ in range(workers)]
        self.events: queue.Queue[tuple[int, int, Any]] = queue.Queue()
        self.threads: list[threading.Thread] = []

    @property
    def size(self) -> int:
        return self.workers

    def start(self) -> None:
        for wid in range(self.workers):
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        slot = self.slots[wid]
        slot.generation += 1
        slot.ready = False
        # Ctrl-C in a terminal reaches the whole process group: the coordinator alone acts on it (it stops the
        # workers), so a worker ignores it from its first line, even while it is still loading the pack.
        code = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + BOOTSTRAP
                + "\nimport sys\nif sys.path and sys.path[0] == '':\n    del sys.path[0]\n"
                "load_pack(sys.argv[1], sys.argv[2])\n"
                "importlib.import_module(sys.argv[2] + '.graph.batch_backends').serve_process()\n")
        env = dict(os.environ)
        if self.config.threads:  # OpenMP/MKL pools sized before torch starts
            env.update(OMP_NUM_THREADS=str(self.config.threads), MKL_NUM_THREADS=str(self.config.threads))
        process = subprocess.Popen([sys.executable, "-c", code, PACK_ROOT, PACK_NAME], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env)
        slot.process = process
        slot.pids.add(process.pid)
        _send(process.stdin, (self.config, f"process {wid + 1}"))
        thread = threading.Thread(target=self._read, args=(wid, slot.generation, process), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _read(self, wid: int, generation: int, process: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                message = _receive(process.stdout)
            except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                message = None
            self.events.put((wid, generation, message))
            if message is None or message[0] == "error":
                return

    def alive(self) -> bool:
        return not all(slot.dead for slot in self.slots)

    def submit(self, wid: int, task: dict[str, Any]) -> None:
        process = self.slots[wid].process
        assert process is not None and process.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # a dead worker: its reader reports it
            _send(process.stdin, ("run", task))

    def next_event(self) -> Event:
        while True:
            try:
                wid, generation, message = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            slot = self.slots[wid]
            if generation != slot.generation:
                continue  # from a process already replaced
            if message is not None and message[0] == "ready":
                slot.ready = True
                return ("ready", wid, {**message[1], "worker": f"process {wid + 1}"})
            if message is not None and message[0] == "result":
                return ("result", wid, message[1])
            # The process ended (or failed to start): reap it, replace it if it had been working.
            process = slot.process
            assert process is not None
            code = _reap(process)
            if message is not None:  # ("error", traceback)
                reason = f"worker process {wid + 1} could not start:\n{message[1]}"
            else:
                reason = f"worker process {wid + 1} (pid {process.pid}) ended with exit code {code}"
            if slot.ready:
                self._spawn(wid)
            else:
                slot.dead = True
            return ("died", wid, reason)

    def pids(self) -> set[int]:
        return {pid for slot in self.slots for pid in slot.pids}

    def close(self, abort: bool = False) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is not None:
                continue
            if abort or not slot.ready:  # still loading the pack: nothing to finish
                process.kill()
            else:
                with contextlib.suppress(OSError, ValueError):
                    _send(process.stdin, ("stop",))
                with contextlib.suppress(OSError):
                    process.stdin.close()  # type: ignore[union-attr]
        for slot in self.slots:
            if slot.process is not None:
                _reap(slot.process, 2 if abort else 30)
                slot.generation += 1  # what its reader still says is stale
        for thread in self.threads:
            thread.join(timeout=5)


def _reap(process: subprocess.Popen[bytes], timeout: float = 10) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _ray_worker_class(ray: Any) -> Any:
    """The actor class, defined here (not at module level) so Ray ships it by value: a worker node needs neither
    this module importable nor the pack installed, only the pack's folder (or the installed package)."""
    bootstrap, root, name = BOOTSTRAP, PACK_ROOT, PACK_NAME

    class GenArtBatchWorker:
        def __init__(self, config: Any, number: int) -> None:
            import importlib as _importlib

            scope: dict[str, Any] = {}
            exec(bootstrap, scope)  # stdlib only: defines load_pack
            scope["load_pack"](root, name)
            backends = _importlib.import_module(name + ".graph.batch_backends")
            import ray as _ray

            node = _ray.get_runtime_context().get_node_id()[:8]
            self.worker = backends.Worker(config, f"ray worker {number} on node {node}")

        def ready(self) -> dict[str, Any]:
            return self.worker.info()

        def run(self, task: dict[str, Any]) -> dict[str, Any]:
            return self.worker.run(task)

    return ray.remote(GenArtBatchWorker)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a cluster address nobody answers at: ray.init would retry for minutes before giving up."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT: let Ray read it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"--ray {address}: no Ray cluster answers there ({err}); start one with "
                           f"'ray start --head --port {port}' on that machine, or use --ray local") from err


class RayBackend:
    """Ray actors, one item at a time each. `address`: a cluster's address, 'auto' (the cluster Ray finds:
    RAY_ADDRESS or one started with `ray start` on this machine; a local Ray just for this batch if none runs),
    or 'local' (always a local Ray). An actor whose process dies is restarted by Ray (a few times); the item it
    held comes back to the coordinator. Files come back as bytes, so workers need no shared output folder."""

    kind = "ray"
    ships = True

    def __init__(self, config: WorkerConfig, workers: int | None, address: str) -> None:
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("--ray needs Ray: pip install 'comfyui-genart[ray]' (or pip install ray)") from err
        self.ray = ray
        self.config, self.address = config, address
        self.requested = workers
        self.connected_here = False
        self.actors: list[Any] = []
        self.dead: set[int] = set()
        self.calls: dict[Any, tuple[str, int]] = {}

    def start(self) -> None:
        import logging

        ray = self.ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
            local = {"include_dashboard": False, "num_cpus": self.requested * (self.config.threads or 1)
                     if self.requested else None}
            if self.address == "local":
                ray.init(**options, **local)
            elif self.address == "auto":
                try:
                    ray.init(address="auto", **options)
                except ConnectionError:
                    print("ray: no running cluster found; starting a local one for this batch", file=sys.stderr)
                    ray.init(**options, **local)
            else:
                check_reachable(self.address)
                ray.init(address=self.address, **options)
            self.connected_here = True
        cpus = self.config.threads or 1
        count = self.requested or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        gpus = 1 if self.config.device.startswith("cuda") or (
            self.config.device == "auto" and ray.cluster_resources().get("GPU", 0) >= count) else 0
        actor_class = _ray_worker_class(ray).options(num_cpus=cpus, num_gpus=gpus, max_restarts=3,
                                                     max_task_retries=0, scheduling_strategy="SPREAD")
        config = asdict(replace(self.config, threads=cpus))  # plain values: read before the pack is loaded
        self.actors = [actor_class.remote(config, wid + 1) for wid in range(count)]
        for wid, actor in enumerate(self.actors):
            self.calls[actor.ready.remote()] = ("ready", wid)

    @property
    def size(self) -> int:
        return len(self.actors)

    def alive(self) -> bool:
        return len(self.dead) < len(self.actors)

    def submit(self, wid: int, task: dict[str, Any]) -> None:
        self.calls[self.actors[wid].run.remote(task)] = ("run", wid)

    def next_event(self) -> Event:
        ray = self.ray
        while True:
            done, _ = ray.wait(list(self.calls), num_returns=1, timeout=0.5)
            if not done:
                continue
            kind, wid = self.calls.pop(done[0])
            try:
                value = ray.get(done[0])
            except ray.exceptions.RayActorError as err:
                if kind == "ready" and isinstance(err, ray.exceptions.ActorDiedError):
                    self.dead.add(wid)  # gone for good (restarts used up, or its constructor failed)
                else:  # Ray restarts it: it is ready again when this answers
                    self.calls[self.actors[wid].ready.remote()] = ("ready", wid)
                return ("died", wid, f"Ray worker {wid + 1} died: {_first_line(err)}")
            except ray.exceptions.RayTaskError as err:  # not the item's failure (those come back as results)
                if kind == "ready":
                    self.dead.add(wid)
                    return ("died", wid, f"Ray worker {wid + 1} could not start: {err}")
                raise
            if kind == "ready":
                return ("ready", wid, value)
            return ("result", wid, value)

    def close(self, abort: bool = False) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors, self.calls = [], {}
        if self.connected_here:
            self.ray.shutdown()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
