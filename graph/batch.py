"""Batches: one workflow over many items (files of the input folder x sweep values), resumable, in this process,
in N local worker processes or on a Ray cluster, with the same outputs and manifest whichever runs them.

    from comfyui_genart.graph.batch import run_batch
    result = run_batch("workflows/protect-image.json", for_each=["1.image=portfolio/*.png"],
                       executor="processes", workers=2, output_dir="protected")
    print(result.done, result.failed, result.manifest)

An item is a set of overrides: the file each `--for-each ID.INPUT=GLOB` gives it and the value of each `--sweep`.
Its outputs are named after it: every `filename_prefix` gets `_<item name>` (the file's stem, with the subfolders
below the pattern's own folder, then `input-value` per sweep), so no two items write the same file. Each
finished item appends one line to the manifest (`<output>/<workflow>.batch.jsonl`: item, values, name, status,
outputs, metrics, seconds, error, attempts, worker); `resume` skips the items done there and retries the failed
ones. A summary table
(`<workflow>.batch.csv`) joins each item with the measurements of the workflow's metrics reports.

An item writes into a private staging folder and its files reach the output folder only once it succeeded, so
an item that fails, is interrupted or loses its worker leaves nothing behind; a worker that dies mid-item has
its item retried on another (up to `max_attempts` times), and the item appears once in the manifest.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .batch_backends import STAGING, InlineBackend, ProcessBackend, RayBackend, WorkerConfig, remove_stale_staging
from .errors import WorkflowInvalid
from .safety import UnsafePathError, atomic_write, confine, next_counter
from .workflow_io import WorkflowFileError, apply_overrides, load_workflow, parse_workflow, sweep_overrides

MAX_BATCH_ITEMS = 100_000
MAX_NAME = 80  # characters of an item's name in file names
ExecutorKind = Literal["inline", "processes", "ray"]


class BatchError(Exception):
    """The batch cannot start or go on (no file matches, a manifest from an earlier batch, no worker left)."""


class ItemInvalid(Exception):
    """One item's prompt failed validation: nothing ran. `.error` is the WorkflowInvalid, `.item` the item."""

    def __init__(self, item: BatchItem, error: WorkflowInvalid) -> None:
        self.item, self.error = item, error
        super().__init__(f"item {item.label}: {error.summary()}")


# ---------------------------------------------------------------------------------------------------- items

@dataclass
class BatchItem:
    """One run of the batch: `files` are (ID.INPUT, file name in the input folder) per --for-each, `values`
    (ID.INPUT, value) per --sweep; `name` goes into its output file names."""

    files: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, Any], ...] = ()
    name: str = ""

    @property
    def overrides(self) -> list[str]:
        return [f"{target}={json.dumps(value)}" for target, value in (*self.files, *self.values)]

    @property
    def item(self) -> str | dict[str, str] | None:
        """The manifest's `item`: the file (one --for-each), {ID.INPUT: file} (several) or None (sweep only)."""
        if not self.files:
            return None
        return self.files[0][1] if len(self.files) == 1 else dict(self.files)

    @property
    def key(self) -> str:
        """What identifies the item in a manifest (its files and values, not its name)."""
        return _key(self.item, dict(self.values))

    @property
    def label(self) -> str:
        return " ".join([*(f for _, f in self.files), *(f"{t}={json.dumps(v)}" for t, v in self.values)]) or "run"


def _key(item: Any, values: dict[str, Any]) -> str:
    return json.dumps([item, values], sort_keys=True)


def plan_items(for_each: Sequence[str] = (), sweeps: Sequence[str] = (), input_dir: str | Path = "input") -> list[
        BatchItem]:
    """The items of `--for-each ID.INPUT=GLOB` (files matching GLOB in `input_dir`, sorted; hidden files left out)
    times `--sweep ID.INPUT=[V, ...]`, every combination, the first axis varying slowest; named for their outputs."""
    root = Path(input_dir).resolve()
    file_axes: list[list[tuple[str, str]]] = []
    bases: list[str] = []  # per --for-each: the folder its pattern names literally, left out of item names
    for spec in for_each:
        target, sep, pattern = spec.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not node_id or not name or not pattern.strip():
            raise WorkflowFileError(f"--for-each {spec!r}: expected ID.INPUT=GLOB, for example "
                                    "--for-each 1.image='portfolio/*.png'")
        try:
            confine(root, pattern, what="--for-each pattern")
        except UnsafePathError as err:
            raise WorkflowFileError(str(err)) from None
        found = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern)
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            raise WorkflowFileError(f"--for-each {spec!r}: no file in {root} matches {pattern!r}")
        file_axes.append([(target, f) for f in found])
        bases.append(_literal_folder(pattern))
    value_axes = []
    for combo in sweep_overrides(list(sweeps)) if sweeps else [[]]:
        value_axes.append(tuple((t, json.loads(v)) for t, _, v in (o.partition("=") for o in combo)))
    count = len(value_axes) * math.prod(len(a) for a in file_axes)
    if count > MAX_BATCH_ITEMS:
        raise WorkflowFileError(f"the batch has {count} items, more than the limit of {MAX_BATCH_ITEMS}; split it "
                                "into several commands (narrower --for-each patterns)")
    items = [BatchItem(tuple(files), values) for files in itertools.product(*file_axes) for values in value_axes]
    _name_items(items, bases)
    return items


_GLOB_MAGIC = re.compile(r"[*?[]")


def _literal_folder(pattern: str) -> str:
    """The folders a pattern names before its first wildcard: 'portfolio/*.png' -> 'portfolio', '**/*.png' -> ''."""
    parts = Path(pattern).parts[:-1]
    return Path(*itertools.takewhile(lambda part: not _GLOB_MAGIC.search(part), parts)).as_posix()


_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    return _NAME_BAD.sub("_", text).strip("._") or "x"


def _name_items(items: list[BatchItem], bases: Sequence[str] = ()) -> None:
    """Each item's name: its files' stems (relative to `bases`, the --for-each patterns' literal folders;
    subfolders joined with '-'), then `input-value` per sweep (the input as ID-input where two sweeps name the
    same input); long or colliding names get a hash of the item."""
    if not items:
        return
    sweep_names = [t.partition(".")[2] for t, _ in items[0].values]
    labels = [t.replace(".", "-") if sweep_names.count(t.partition(".")[2]) > 1 else t.partition(".")[2]
              for t, _ in items[0].values]
    names = []
    for item in items:
        parts = [_slug(_relative(f, base).with_suffix("").as_posix().replace("/", "-"))
                 for (_, f), base in itertools.zip_longest(item.files, bases[:len(item.files)], fillvalue="")]
        parts += [f"{label}-{_slug(v if isinstance(v, str) else json.dumps(v))}"
                  for label, (_, v) in zip(labels, item.values, strict=True)]
        names.append("_".join(parts))

    def tag(item: BatchItem) -> str:
        return hashlib.sha1(item.key.encode()).hexdigest()[:8]

    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    for item, n in zip(items, names, strict=True):
        if len(n) > MAX_NAME:
            n = f"{n[:MAX_NAME - 9]}-{tag(item)}"
        elif counts[n] > 1:
            n = f"{n}-{tag(item)}"
        item.name = n


def _relative(file: str, base: str) -> Path:
    path = Path(file)
    return path.relative_to(base) if base and path.is_relative_to(base) else path


def item_prompt(prompt: dict[str, Any], item: BatchItem) -> dict[str, Any]:
    """The prompt of one item: its overrides, and `_<name>` after every constant filename_prefix."""
    out = apply_overrides(prompt, item.overrides)
    if item.name:
        for node in out.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if isinstance(inputs, dict) and isinstance(inputs.get("filename_prefix"), str):
                inputs["filename_prefix"] = f"{inputs['filename_prefix']}_{item.name}"
    return out


# ---------------------------------------------------------------------------------------------------- manifest

class Manifest:
    """JSON lines, one per finished item (the last line of an item wins). Each line is written with one
    append-mode write, so a reader, or a batch killed at any moment, sees whole lines; a torn last line (power
    loss) is skipped when read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return latest
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "status" in record:
                latest[_key(record.get("item"), record.get("values") or {})] = record
        return latest

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = "\n" + line  # after a torn line: start a fresh one
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


def write_summary(path: Path, items: Sequence[BatchItem], records: dict[str, dict[str, Any]]) -> None:
    """One row per item, in item order: its files and values, name, status, seconds, attempts, outputs, error, and
    one column per measurement of the workflow's metrics reports ("label/metric")."""
    first = items[0] if items else BatchItem()
    file_columns = ["item"] if len(first.files) == 1 else [t for t, _ in first.files]
    value_columns = [t for t, _ in first.values]
    metric_columns: dict[str, None] = {}
    for item in items:
        metric_columns.update(dict.fromkeys((records.get(item.key) or {}).get("metrics") or {}))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*file_columns, *value_columns, "name", "status", "seconds", "attempts", "outputs", "error",
                     *metric_columns])
    for item in items:
        record = records.get(item.key) or {}
        metrics = record.get("metrics") or {}
        writer.writerow([*(f for _, f in item.files), *(json.dumps(v) if not isinstance(v, str) else v
                                                         for _, v in item.values),
                         item.name, record.get("status", "pending"), record.get("seconds", ""),
                         record.get("attempts", ""), ";".join(record.get("outputs") or []),
                         record.get("error") or "", *(metrics.get(m, "") for m in metric_columns)])
    atomic_write(path, buffer.getvalue().encode("utf-8"))


# ---------------------------------------------------------------------------------------------------- outputs

_COUNTED = re.compile(r"^(?P<stem>.+)_(?P<n>\d{5,})_(?P<rest>\..*)?$")


def commit_outputs(output_dir: Path, staging: Path | None, files: Sequence[tuple[str, bytes | None]]) -> list[str]:
    """Move one item's files from its staging folder (or write their shipped bytes) into the output folder; the
    names they end with, relative to it. A file already there with the same bytes is kept as it is (an item
    redone after a crash); ComfyUI-style `<stem>_<counter>_` names that would replace a different file move on to
    the next free counter, together with the item's other files of that stem; other names are replaced, as the
    node itself would replace them."""
    def data(rel: str, payload: bytes | None) -> bytes:
        return payload if payload is not None else (staging / rel).read_bytes()  # type: ignore[operator]

    renames: dict[tuple[str, str], int] = {}  # (folder, stem) -> counter offset
    groups: dict[tuple[str, str], list[tuple[str, bytes | None]]] = {}
    for rel, payload in files:
        m = _COUNTED.match(Path(rel).name)
        if m:
            groups.setdefault((str(Path(rel).parent), m["stem"]), []).append((rel, payload))
    for (folder, stem), members in groups.items():
        clash = any((output_dir / rel).exists() and (output_dir / rel).read_bytes() != data(rel, payload)
                    for rel, payload in members)
        if clash:
            lowest = min(int(_COUNTED.match(Path(rel).name)["n"]) for rel, _ in members)  # type: ignore[index]
            renames[(folder, stem)] = next_counter(output_dir / folder, stem) - lowest
    final = []
    for rel, payload in files:
        target_rel = rel
        m = _COUNTED.match(Path(rel).name)
        if m and (str(Path(rel).parent), m["stem"]) in renames:
            n = int(m["n"]) + renames[(str(Path(rel).parent), m["stem"])]
            target_rel = (Path(rel).parent / f"{m['stem']}_{n:05}_{m['rest'] or ''}").as_posix()
        target = output_dir / target_rel
        if target.exists() and target.read_bytes() == data(rel, payload):
            final.append(target_rel)
            continue
        if payload is not None:
            atomic_write(target, payload)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)  # type: ignore[operator]
        final.append(target_rel)
    return final


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (moving an item's files and writing its manifest line)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)  # Python's own handler raises KeyboardInterrupt
        elif caught and previous is not signal.SIG_IGN:
            raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------------- batches

@dataclass
class Batch:
    """Validated items, ready to run: each item's prompt is made from `prompt` when it is handed out."""

    items: list[BatchItem]
    prompt: dict[str, Any]  # the workflow's API prompt with the --set overrides
    workflow: dict[str, Any] | None  # the UI workflow, embedded in the PNGs as is
    name: str  # the manifest's and summary's name in the output folder

    def prompt_for(self, index: int) -> dict[str, Any]:
        return item_prompt(self.prompt, self.items[index])


@dataclass
class BatchResult:
    items: list[BatchItem]
    records: dict[str, dict[str, Any]]  # item key -> its manifest record (latest)
    manifest: Path
    summary: Path
    ran: int = 0  # items run by this call (done or failed)
    skipped: int = 0  # done by an earlier call (resume)
    retried: int = 0  # times an item went back to the queue because its worker died
    seconds: float = 0.0
    ready_seconds: float = 0.0  # until every worker could take an item
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if (self.records.get(item.key) or {}).get("status") == status)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")


def prepare_batch(workflow: str | Path | dict[str, Any], items: Sequence[BatchItem] | None = None, *,
                  for_each: Sequence[str] = (), sweeps: Sequence[str] = (), overrides: Sequence[str] = (),
                  config: WorkerConfig, name: str | None = None) -> Batch:
    """Load the workflow, plan the items (unless given) and validate every item's prompt before anything runs:
    raises WorkflowFileError, ItemInvalid."""
    from .api import make_settings, registry
    from .comfy import object_info
    from .executor import Executor

    nodes = registry()
    if isinstance(workflow, dict):
        prompt, ui = parse_workflow(workflow, object_info(nodes))
    else:
        prompt, ui = load_workflow(Path(workflow), object_info(nodes))
    prompt = apply_overrides(prompt, list(overrides))
    planned = list(items) if items is not None else plan_items(for_each, sweeps, config.input_dir)
    if planned and not any(item.name for item in planned):
        _name_items(planned)  # items made by hand: named like planned ones, so their outputs do not collide
    for target, _ in planned[0].files if planned else ():
        if target.partition(".")[0] not in prompt:  # else apply_overrides would blame a --set
            raise WorkflowFileError(f"--for-each {target}=...: the workflow has no node "
                                    f"{target.partition('.')[0]!r}; its nodes are {', '.join(map(str, prompt))}")
    settings = make_settings(input_dir=config.input_dir, output_dir=config.output_dir, temp_dir=config.temp_dir,
                             models_dirs=config.models_dirs, device=config.device, dtype=config.dtype,
                             allow_any_path=config.allow_any_path)
    checker = Executor(nodes, settings)
    for item in planned:
        try:
            checker.validate(item_prompt(prompt, item))
        except WorkflowInvalid as err:
            raise ItemInvalid(item, err) from None
    if name is None:
        name = _slug(Path(workflow).stem) if not isinstance(workflow, dict) else "batch"
    return Batch(planned, prompt, ui, name)


class BatchPool:
    """Workers that stay up across batches (models loaded once per worker):

        with BatchPool(config, "processes", workers=2) as pool:
            result = pool.run(prepare_batch("workflows/protect-image.json", for_each=[...], config=config))
    """

    def __init__(self, config: WorkerConfig, executor: ExecutorKind = "inline", workers: int | None = None,
                 ray_address: str = "auto") -> None:
        self.config = config
        if executor == "inline":
            self.backend: Any = InlineBackend(config)
        elif executor == "processes":
            self.backend = ProcessBackend(config, workers or 1)
        elif executor == "ray":
            self.backend = RayBackend(config, workers, ray_address)
        else:
            raise ValueError(f"executor {executor!r}: use 'inline', 'processes' or 'ray'")
        self.idle: deque[int] = deque()
        self.started = time.perf_counter()
        self.ready_at: float | None = None
        self._ready: set[int] = set()
        self.pids: dict[int, int | None] = {}  # worker -> its process id, as it said when ready
        self.last_death = ""
        self._open = False
        self.output_dir = Path(config.output_dir).resolve()

    def __enter__(self) -> BatchPool:
        self.start()
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        self.close(abort=kind is not None)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.backend.start()
        self._open = True

    def close(self, abort: bool = False) -> None:
        if self._open:
            self._open = False
            self.backend.close(abort=abort)
        remove_stale_staging(self.output_dir / STAGING, self._pids(), drop_root=True)

    def wait_ready(self) -> None:
        """Return once every worker has loaded the pack and can take an item (between batches; to time them)."""
        while len(self._ready) < self.backend.size:
            if not self.backend.alive():
                raise BatchError(f"no worker could start; the last one: {self.last_death}")
            kind, wid, payload = self.backend.next_event()
            if kind == "ready":
                self._ready.add(wid)
                self.pids[wid] = payload.get("pid")
                self.idle.append(wid)
            elif kind == "died":
                self.last_death = payload
                self._ready.discard(wid)
                with suppress(ValueError):
                    self.idle.remove(wid)
        if self.ready_at is None:
            self.ready_at = time.perf_counter()

    def _pids(self) -> set[int]:
        return self.backend.pids() if isinstance(self.backend, ProcessBackend) else {os.getpid()}

    def run(self, batch: Batch, *, resume: bool = False, manifest: Path | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None, max_attempts: int = 3) -> BatchResult:
        """Run the batch's items not done yet; returns when every item is done or failed. Ctrl-C: the workers
        stop, the items they held leave nothing behind, the manifest keeps what finished, the summary is written,
        and KeyboardInterrupt goes on up (run again with resume=True to finish)."""
        output_dir = self.output_dir
        manifest_path = check_manifest(manifest_file(output_dir, batch, manifest), resume)
        summary_path = manifest_path.with_name(manifest_path.name.removesuffix(".jsonl") + ".csv")
        book = Manifest(manifest_path)
        records = book.read() if resume else {}
        result = BatchResult(batch.items, records, manifest_path, summary_path)
        emit = on_event or (lambda event: None)
        todo = deque(i for i, item in enumerate(batch.items) if (records.get(item.key) or {}).get("status") != "done")
        result.skipped = len(batch.items) - len(todo)
        attempts = dict.fromkeys(todo, 0)
        inflight: dict[int, int] = {}  # worker -> item index
        staging_root = None if self.backend.ships else output_dir / STAGING
        if staging_root is not None:
            remove_stale_staging(staging_root)  # left by a batch that was killed
        started = time.perf_counter()

        def record(index: int, fields: dict[str, Any]) -> None:
            item = batch.items[index]
            entry = {"item": item.item, "values": dict(item.values), "name": item.name, **fields,
                     "attempts": attempts[index]}
            book.append(entry)
            records[item.key] = entry
            result.ran += 1
            emit({"event": entry["status"], "item": item, "index": index, "record": entry})

        try:
            while todo or inflight:
                while todo and self.idle:
                    wid, index = self.idle.popleft(), todo.popleft()
                    attempts[index] += 1
                    inflight[wid] = index
                    self.backend.submit(wid, {"prompt": batch.prompt_for(index), "workflow": batch.workflow,
                                              "staging_root": str(staging_root) if staging_root else None,
                                              "ship": self.backend.ships})
                    emit({"event": "start", "item": batch.items[index], "index": index, "worker": wid,
                          "pid": self.pids.get(wid), "attempt": attempts[index]})
                if not self.backend.alive():
                    raise BatchError(f"no worker is left to run the {len(todo) + len(inflight)} remaining item(s); "
                                     f"the last one: {self.last_death}")
                kind, wid, payload = self.backend.next_event()
                with _sigint_deferred():  # an item's files and its manifest line go in together
                    if kind == "ready":
                        self._ready.add(wid)
                        self.pids[wid] = payload.get("pid")
                        if self.ready_at is None and len(self._ready) >= self.backend.size:
                            self.ready_at = time.perf_counter()
                        self.idle.append(wid)
                        emit({"event": "ready", "worker": wid, "name": payload.get("worker"),
                              "pid": payload.get("pid")})
                    elif kind == "result":
                        index = inflight.pop(wid)
                        self.idle.append(wid)
                        outputs: list[str] = []
                        if payload["status"] == "done":
                            staged = None if self.backend.ships else Path(payload["staging"])
                            outputs = commit_outputs(output_dir, staged, payload["files"])
                            if staged is not None:
                                shutil.rmtree(staged, ignore_errors=True)
                        record(index, {"status": payload["status"], "outputs": outputs, "metrics": payload["metrics"],
                                       "seconds": round(payload["seconds"], 3), "error": payload["error"],
                                       "worker": payload["worker"]})
                    elif kind == "died":
                        self._ready.discard(wid)
                        self.last_death = payload
                        with suppress(ValueError):
                            self.idle.remove(wid)
                        if staging_root is not None and self.pids.get(wid):
                            remove_stale_staging(staging_root, {self.pids[wid]})
                        index = inflight.pop(wid, None)
                        if index is not None and attempts[index] >= max_attempts:
                            record(index, {"status": "failed", "outputs": [], "metrics": {}, "seconds": 0.0,
                                           "error": f"the worker running it died {attempts[index]} times; last: "
                                                    f"{payload}", "worker": None})
                        elif index is not None:
                            result.retried += 1
                            todo.appendleft(index)
                            emit({"event": "retry", "item": batch.items[index], "index": index, "reason": payload})
        except BaseException:
            result.interrupted = True
            self.close(abort=True)  # the workers stop before their staging folders go
            raise
        finally:
            result.seconds = time.perf_counter() - started
            result.ready_seconds = (self.ready_at - self.started) if self.ready_at else result.seconds
            if staging_root is not None:  # the workers are idle (or stopped): nothing of theirs is being written
                remove_stale_staging(staging_root, self._pids(), drop_root=True)
            write_summary(summary_path, batch.items, records)
        return result


def manifest_file(output_dir: Path, batch: Batch, manifest: str | Path | None = None) -> Path:
    return Path(manifest) if manifest else Path(output_dir) / f"{batch.name}.batch.jsonl"


def check_manifest(path: Path, resume: bool) -> Path:
    if path.exists() and not resume:
        raise BatchError(f"{path} is the manifest of an earlier batch: pass --resume (resume=True) to skip the items "
                         "it lists as done and retry the failed ones, or choose another output folder")
    return path


def run_batch(workflow: str | Path | dict[str, Any], items: Sequence[BatchItem] | None = None, *,
              for_each: Sequence[str] = (), sweeps: Sequence[str] = (), overrides: Sequence[str] = (),
              executor: ExecutorKind = "inline", workers: int | None = None, ray_address: str = "auto",
              resume: bool = False, manifest: Path | None = None, threads: int | None = None,
              on_event: Callable[[dict[str, Any]], None] | None = None, max_attempts: int = 3,
              input_dir: str | Path = "input", output_dir: str | Path = "output", temp_dir: str | Path = "temp",
              models_dirs: Sequence[str | Path] = ("models",), device: str = "auto", dtype: str = "float32",
              allow_any_path: bool = False, cache_dir: str | Path | None = None, progress: bool = False) -> BatchResult:
    """Run `workflow` (file, API prompt or UI workflow) over `items` (or those of `for_each` x `sweeps`, as the
    CLI's --for-each and --sweep), on `executor`: 'inline' (this process), 'processes' (`workers` local
    processes) or 'ray' (`workers` actors, default one per CPU of the cluster at `ray_address`). `threads`: torch
    threads per worker (default 1 for processes and Ray, torch's own inline). Every item is validated first
    (ItemInvalid); an existing manifest needs `resume`."""
    config = worker_config(input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir, models_dirs=models_dirs,
                           device=device, dtype=dtype, allow_any_path=allow_any_path, cache_dir=cache_dir,
                           threads=threads if threads or executor == "inline" else 1, progress=progress)
    batch = prepare_batch(workflow, items, for_each=for_each, sweeps=sweeps, overrides=overrides, config=config)
    check_manifest(manifest_file(Path(config.output_dir), batch, manifest), resume)
    with BatchPool(config, executor, workers, ray_address) as pool:
        return pool.run(batch, resume=resume, manifest=manifest, on_event=on_event, max_attempts=max_attempts)


def worker_config(*, input_dir: str | Path, output_dir: str | Path, temp_dir: str | Path,
                  models_dirs: Sequence[str | Path], device: str = "auto", dtype: str = "float32",
                  allow_any_path: bool = False, cache_dir: str | Path | None = None, threads: int | None = None,
                  progress: bool = False) -> WorkerConfig:
    return WorkerConfig(input_dir=str(Path(input_dir).resolve()), output_dir=str(Path(output_dir).resolve()),
                        temp_dir=str(Path(temp_dir).resolve()),
                        models_dirs=tuple(str(Path(m).resolve()) for m in models_dirs), device=device, dtype=dtype,
                        allow_any_path=allow_any_path, cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None,
                        threads=threads, progress=progress)


# ---------------------------------------------------------------------------------------------------- CLI

def batch_main(args: Any) -> int:
    """`python -m graph.run WORKFLOW --for-each ... [--sweep ...] [--workers N] [--ray ADDRESS] [--resume]`:
    exit 0 when every item is done, 1 when one failed or the batch was interrupted or stopped, 2 when nothing ran
    (an invalid item, no matching file, a manifest without --resume, Ray missing)."""
    from .cli import EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, _fail, _write_report
    from .ui_format import UIConversionError

    executor: ExecutorKind = "ray" if args.ray else "processes" if args.workers else "inline"
    threads = args.threads or (None if executor == "inline" else 1)
    config = worker_config(input_dir=args.input_dir, output_dir=args.output_dir, temp_dir=args.temp_dir,
                           models_dirs=args.models_dir or [Path("models")], device=args.device, dtype=args.dtype,
                           allow_any_path=args.allow_any_path, cache_dir=args.cache_dir, threads=threads,
                           progress=executor == "inline" and not args.quiet)
    try:
        batch = prepare_batch(args.workflow, for_each=args.for_each, sweeps=args.sweeps, overrides=args.overrides,
                              config=config)
        if not args.validate_only:
            check_manifest(manifest_file(Path(config.output_dir), batch), args.resume)
    except ItemInvalid as err:
        _write_report(args.report, err.error.to_json())
        return _fail(f"invalid workflow {args.workflow} (item {err.item.label}):\n{err.error.summary()}",
                     EXIT_INVALID)
    except (WorkflowFileError, UIConversionError, UnsafePathError, BatchError) as err:
        return _fail(str(err), EXIT_INVALID)
    if args.validate_only:
        print(f"{args.workflow}: valid; {len(batch.items)} item(s) would run")
        return EXIT_OK
    total = len(batch.items)
    output_dir = Path(config.output_dir)

    def show(event: dict[str, Any]) -> None:
        kind = event["event"]
        head = f"[{event.get('index', 0) + 1}/{total}] {event['item'].label}" if "item" in event else ""
        if kind == "done":
            entry = event["record"]
            where = f" ({entry['worker']})" if executor != "inline" else ""
            print(f"{head}: done in {entry['seconds']:.2f} s{where}", file=sys.stderr)
            for rel in entry["outputs"]:
                print(output_dir / rel)
        elif kind == "failed":
            print(f"{head}: FAILED: {event['record']['error']}", file=sys.stderr)
        elif kind == "retry":
            print(f"{head}: will run again ({event['reason']})", file=sys.stderr)
        elif kind == "ready" and executor != "inline":
            print(f"{event['name']} ready (pid {event['pid']})", file=sys.stderr)

    try:
        pool = BatchPool(config, executor, args.workers, args.ray or "auto")
    except RuntimeError as err:  # Ray is not installed
        return _fail(str(err), EXIT_INVALID)
    try:
        with pool:
            result = pool.run(batch, resume=args.resume, on_event=show)
    except (BatchError, ConnectionError) as err:  # ConnectionError: no cluster at the --ray address
        return _fail(str(err), EXIT_RUNTIME)
    except KeyboardInterrupt:
        records = Manifest(manifest_file(output_dir, batch)).read()
        done = sum(1 for item in batch.items if (records.get(item.key) or {}).get("status") == "done")
        return _fail(f"interrupted with {done} of {total} items done: the manifest lists them, the others left "
                     "nothing behind; run the same command with --resume to finish", EXIT_RUNTIME)
    _write_report(args.report, {"batch": {
        "items": total, "done": result.done, "failed": result.failed, "skipped": result.skipped,
        "retried": result.retried, "seconds": result.seconds, "manifest": str(result.manifest),
        "summary": str(result.summary)}})
    before = f", {result.skipped} done before" if result.skipped else ""
    print(f"batch: {result.done}/{total} done, {result.failed} failed{before}, in {result.seconds:.1f} s; manifest "
          f"{result.manifest}, summary {result.summary}", file=sys.stderr)
    return EXIT_OK if result.failed == 0 else EXIT_RUNTIME
