"""Loading weight files safely and into memory torch allocated itself.

Safetensors files are read tensor by tensor into `torch.empty` buffers (64-byte aligned by torch's
CPU allocator) rather than viewed in place through a memory map: a view's address follows the file
layout (the header's length moves it), and CPU convolution and matmul kernels round differently on
unaligned memory, so the same weights would give other bits depending on how the file was written.
Reading into fresh buffers also keeps peak memory at one copy of the weights.

A `.ckpt`, `.pt`, `.pth` or `.bin` from a stranger can run code when unpickled; `torch.load` with
`weights_only=True` only rebuilds tensors and plain containers and refuses everything else.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# The safetensors dtype names (the format's spec) that torch can hold.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's own limit


class UnsafeWeightsError(ValueError):
    """A weights file would need full unpickling (it holds more than tensors) and was refused."""


class WeightsFormatError(ValueError):
    """A safetensors file whose header is malformed or does not match its size."""


def _tensor_entries(header: dict[str, Any], data_bytes: int, name: str) -> list[tuple[str, torch.dtype, list[int],
                                                                                       int, int]]:
    entries = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsFormatError(f"{name}: tensor {key!r} has a malformed entry {info!r} ({err!r})") from err
        numel = 1
        for s in shape:
            numel *= s
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_bytes or \
                end - begin != numel * dtype.itemsize:
            raise WeightsFormatError(f"{name}: tensor {key!r} (shape {shape}, {info['dtype']}) does not fit its "
                                     f"offsets {begin}..{end} in {data_bytes} bytes of data")
        entries.append((key, dtype, shape, begin, end))
    return entries


def read_safetensors(path: Path | str, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor],
                                                                                   dict[str, str]]:
    """(tensors by name, metadata) of a .safetensors file, each tensor in its own torch-allocated buffer.

    Same tensors, names and order as `safetensors.torch.load_file`; only where they live differs.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise WeightsFormatError(f"{path.name} is not a safetensors file (header length {length}, file size "
                                     f"{size} bytes)")
        try:
            header = json.loads(f.read(length))
        except ValueError as err:
            raise WeightsFormatError(f"{path.name}: the safetensors header is not valid JSON ({err})") from err
        if not isinstance(header, dict):
            raise WeightsFormatError(f"{path.name}: the safetensors header is not a JSON object")
        metadata = header.get("__metadata__") or {}
        base = 8 + length
        tensors: dict[str, torch.Tensor] = {}
        for key, dtype, shape, begin, end in _tensor_entries(header, size - base, path.name):
            tensor = torch.empty(shape, dtype=dtype)
            if end > begin:
                f.seek(base + begin)
                buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")
                got = 0
                while got < end - begin:
                    n = f.readinto(buffer[got:])
                    if not n:
                        raise WeightsFormatError(f"{path.name}: the file ends inside tensor {key!r}")
                    got += n
            tensors[key] = tensor if torch.device(device).type == "cpu" else tensor.to(device)
    if not isinstance(metadata, dict):
        raise WeightsFormatError(f"{path.name}: the safetensors metadata is not a JSON object")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def load_state_dict(path: Path | str, device: str | torch.device = "cpu",
                    allow_pickle: bool = True) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors file, or from a pickle-based file with weights_only=True; either
    way in memory torch allocated."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path, device)[0]
    if suffix not in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(f"{path.name}: unknown weights format {suffix!r}; use .safetensors")
    if not allow_pickle:
        raise UnsafeWeightsError(f"{path.name}: pickle-based weights are disabled; convert it to .safetensors")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise UnsafeWeightsError(
            f"{path.name} holds more than tensors (refused by torch's weights-only loader; it was not "
            f"executed). Convert it to .safetensors with a tool you trust. Detail: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # Lightning/LDM checkpoints nest the weights
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UnsafeWeightsError(f"{path.name}: expected a mapping of names to tensors")
    return data


ALIGNMENT = 64  # bytes: torch's CPU allocator aligns every allocation to this


def own_memory(module: torch.nn.Module, loaded: set[int]) -> None:
    """Copy every parameter and buffer still in a loader's memory (its storage address is in `loaded`: a
    memory map, a bytes object) or not aligned (a view into the middle of a storage) into a fresh torch
    allocation, one tensor at a time."""
    with torch.no_grad():
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for name, tensor in table.items():
                    if tensor is not None and (tensor.untyped_storage().data_ptr() in loaded
                                               or tensor.data_ptr() % ALIGNMENT):
                        if isinstance(tensor, torch.nn.Parameter):
                            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
                        else:
                            table[name] = tensor.clone(memory_format=torch.contiguous_format)


def storages(module: torch.nn.Module) -> set[int]:
    """Storage addresses of a module's parameters and buffers (see `own_memory`)."""
    return {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
