"""What every model format shares: building a model with empty weights, filling it strictly, finishing it
(device, dtype, eval, frozen, weights in torch's own memory)."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..weights import own_memory, storages

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(ValueError):
    """A model file or folder is missing, of the wrong kind, or does not match its config."""


def finish(model: Any, device: torch.device, dtype: torch.dtype, owned: bool = False) -> Any:
    """On its device and dtype, in eval mode, frozen, every weight in memory torch allocated.

    Loaders that read through a memory map (diffusers' and transformers' from_pretrained) leave weights at
    addresses that follow the file layout, and CPU kernels round differently on unaligned memory: what the
    cast or move did not already copy is copied here, so a model gives the same bits wherever its file lives.
    `owned`: the weights were read into torch's own memory already (`read_safetensors`).
    """
    loaded = set() if owned else storages(model)
    if getattr(model, "_keep_in_fp32_modules", None):
        model = model.to(device=device, dtype=dtype)  # diffusers keeps those modules in float32
    else:
        # diffusers' own .to() warns about float32 modules on every dtype cast, even when there are none.
        model = torch.nn.Module.to(model, device=device, dtype=dtype)
    own_memory(model, loaded)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no random init) when accelerate is
    installed; buffers stay real, so non-persistent ones (CLIP's position_ids) keep their values."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # plain construction: slower, same result once the weights are assigned
        yield
        return
    with init_empty_weights(include_buffers=False):
        yield


def empty_model(make: Callable[[], Any]) -> Any:
    with empty_weights():
        return make()


def fill_strict(model: Any, state: dict[str, torch.Tensor], what: str) -> Any:
    """`model` (built by `empty_model`) holding `state`, which must be exactly its weights, same shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the config"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {'; '.join(wrong[:3])})")
        raise ModelLoadError(f"{what}: the weights do not match the config: {'; '.join(parts)}. "
                             "Check that the file and the config describe the same architecture")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{what}: {path} cannot be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what}: {path} holds a JSON {type(data).__name__}, expected an object")
    return data


@dataclass(frozen=True)
class ModelSource:
    """Where a diffusers model's weights are: a folder with config.json, or one of our single files."""

    path: Path
    class_name: str
    config: dict[str, Any] | None = None  # single files: the config from the metadata
