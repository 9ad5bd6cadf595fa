"""GenArt single files: one .safetensors holding a diffusers model's weights, with its config and class
name in the metadata (written by GenArt Save Model)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import ModelLoadError, ModelSource


def _single_file_source(path: Path, name: str, input_name: str) -> ModelSource:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ModelLoadError(f"{input_name} {name!r} cannot be read as safetensors ({err})") from err
    if "config" not in metadata:
        if (path.parent / "config.json").is_file():
            folder = Path(name).parent.as_posix()
            raise ModelLoadError(f"{input_name} {name!r} is the weights file inside the diffusers folder "
                                 f"{folder!r}; choose the folder {folder!r} instead")
        raise ModelLoadError(f"{input_name} {name!r} has no 'config' in its safetensors metadata, so it is not a "
                             "GenArt single-file model (those are written by GenArt Save Model); for a Stable "
                             "Diffusion 1.x checkpoint use GenArt Load SD1.5 Checkpoint")
    try:
        config = json.loads(metadata["config"])
    except ValueError as err:
        raise ModelLoadError(f"{input_name} {name!r}: the 'config' metadata is not valid JSON ({err})") from err
    class_name = metadata.get("class_name") or (config.get("_class_name") if isinstance(config, dict) else None)
    if not isinstance(config, dict) or not isinstance(class_name, str):
        raise ModelLoadError(f"{input_name} {name!r}: the metadata needs a JSON object 'config' and a "
                             "'class_name' (or '_class_name' inside the config)")
    return ModelSource(path, class_name, config)


def single_file_bytes(model: Any) -> bytes:
    """A GenArt single-file model: the weights, with the config and class name in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": model.to_json_string(), "class_name": type(model).__name__, "format": "pt"}
    return save(tensors, metadata=metadata)
