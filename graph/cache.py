"""Output caches: structural keys, an in-memory LRU with a byte budget, and a persistent disk cache.

A node's key hashes its class_type, version, constants, file fingerprints and the keys (plus output
index) of the nodes feeding it; node ids are not part of it, so identical subgraphs share results.
In-memory outputs stay where they were made (a GPU tensor stays on the GPU).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

Outputs = tuple[Any, ...]


def structural_key(class_type: str, version: int, constants: dict[str, Any],
                   inputs: Iterable[tuple[str, str, int]], fingerprint: str = "") -> str:
    """Hex digest of a node's identity; `inputs` are (input name, source key, output index)."""
    links = "".join(f"\x00{name}={key}:{index}" for name, key, index in sorted(inputs))
    text = f"{class_type}\x00{version}\x00{fingerprint}\x00{sorted(constants.items())!r}{links}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def file_fingerprint(path: Path) -> str:
    """Size and modification time (of every file inside, for a model folder): cheap, and it changes
    whenever a file is rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    if not path.is_dir():
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    parts = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            s = p.stat()
            parts.append(f"{p.relative_to(path)}:{s.st_size}:{s.st_mtime_ns}")
    return f"{path}/" + hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


_SCALARS = (int, float, str, bool, bytes, type(None))


def nbytes(value: Any) -> int:
    """Bytes held by tensors reachable from a value: containers, dataclasses and plain objects are
    followed (a model handle counts its weights; a denoising state its scheduler's tensors), each
    object once."""
    if type(value) is tuple and all(isinstance(v, _SCALARS) for v in value):
        return 0  # the common case of small nodes, without the walk
    total = 0
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _SCALARS) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, torch.nn.Module):
            stack.extend(item.parameters())
            stack.extend(item.buffers())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())
    return total


class OutputCache:
    """In-process LRU cache of node outputs by structural key, bounded in bytes."""

    def __init__(self, budget_bytes: int = 4 << 30) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: OrderedDict[str, tuple[Outputs, int]] = OrderedDict()

    def get(self, key: str) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, outputs: Outputs, size: int | None = None) -> None:
        """Keep `outputs` under `key`; `size` (bytes) is measured when not given."""
        size = nbytes(outputs) if size is None else size
        if size > self.budget:
            return  # larger than the whole budget: keeping it would evict everything for nothing
        old = self._entries.pop(key, None)
        if old is not None:
            self.used -= old[1]
        self._entries[key] = (outputs, size)
        self.used += size
        while self.used > self.budget and self._entries:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used -= evicted

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0


# Payload classes the disk cache may rebuild, by name: each has to_cache() -> dict of storable values and
# from_cache(dict). Only these are rebuilt (by looking the name up here), so a cache file never names code.
CACHE_TYPES: dict[str, Any] = {}


def register_cache_type(cls: type) -> type:
    """Let the disk cache store `cls` (a payload with to_cache / from_cache); usable as a decorator."""
    CACHE_TYPES[cls.__name__] = cls
    return cls


class DiskCache:
    """Outputs of expensive nodes as safetensors files named by structural key; reused across processes.

    Only tensors, dicts and lists of them, JSON scalars and registered payload types (register_cache_type)
    are stored; anything else (a model object) is not serializable and is simply not persisted.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def get(self, key: str, device: torch.device) -> Outputs | None:
        path = self._path(key)
        if not path.exists():
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            layout = json.loads(f.metadata()["genart_layout"])
        # Copies in torch's own (aligned) memory: load_file's views sit where the file layout puts them, and
        # kernels round differently on unaligned memory, so a cached input would give other bits downstream.
        tensors = {k: v.clone().to(device) for k, v in load_file(str(path)).items()}
        return tuple(_unflatten(item, tensors) for item in layout)

    def put(self, key: str, outputs: Outputs) -> bool:
        tensors: dict[str, torch.Tensor] = {}
        try:
            layout = [_flatten(v, f"o{i}", tensors) for i, v in enumerate(outputs)]
        except TypeError:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{key}-{os.getpid()}.safetensors"
        # safetensors refuses tensors that share memory (a latent output twice, a view of another output).
        stored: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, t in tensors.items():
            t = t.detach().contiguous().cpu()
            if t.untyped_storage().data_ptr() in seen:
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            stored[name] = t
        save_file(stored, str(tmp), metadata={"genart_layout": json.dumps(layout)})
        os.replace(tmp, self._path(key))
        return True


def _flatten(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _flatten(v, f"{name}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return {"value": value}
    if CACHE_TYPES.get(type(value).__name__) is type(value):
        return {"type": type(value).__name__, "fields": _flatten(value.to_cache(), name, tensors)}
    raise TypeError(f"{type(value).__name__} is not serializable")


def _unflatten(item: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in item:
        return tensors[item["tensor"]]
    if "dict" in item:
        return {k: _unflatten(v, tensors) for k, v in item["dict"].items()}
    if "list" in item:
        return [_unflatten(v, tensors) for v in item["list"]]
    if "type" in item:
        cls = CACHE_TYPES.get(item["type"])
        if cls is None:
            raise KeyError(f"cache entry of unknown type {item['type']!r}")
        return cls.from_cache(_unflatten(item["fields"], tensors))
    return item["value"]

