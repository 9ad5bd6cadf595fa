"""Loading weight files safely: safetensors, or pickle-based files only through torch's weights-only loader.

A `.ckpt`, `.pt`, `.pth` or `.bin` from a stranger can run code when unpickled; `torch.load` with
`weights_only=True` only rebuilds tensors and plain containers and refuses everything else.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class UnsafeWeightsError(ValueError):
    """A weights file would need full unpickling (it holds more than tensors) and was refused."""


def load_state_dict(path: Path | str, device: str | torch.device = "cpu",
                    allow_pickle: bool = True) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors file, or from a pickle-based file with weights_only=True."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_file(str(path), device=str(device))
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
