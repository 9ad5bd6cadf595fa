"""Diffusers models: a folder (config.json + weights), a component of a pipeline folder, or a GenArt single
file, loaded offline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..handles import TRAINING_FILE
from ..weights import read_safetensors
from .common import ModelLoadError, ModelSource, empty_model, fill_strict, finish, read_json
from .single_file import _single_file_source

# Which of our nodes loads which diffusers class (for "use that node instead" hints).
LOADER_FOR = {"VQModel": "GenArtLoadVQModel", "AutoencoderKL": "GenArtLoadAutoencoder",
              "UNet2DModel": "GenArtLoadDenoiser", "UNet2DConditionModel": "GenArtLoadDenoiser",
              "GANGenerator": "GenArtLoadGAN", "ImageClassifier": "GenArtLoadClassifier"}


# The library's own diffusers-style models (ModelMixin + ConfigMixin), found by their `_class_name` like
# diffusers' classes are.
GENART_CLASSES = ("GANGenerator", "GANDiscriminator", "ImageClassifier")


UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


def find_model(path: Path, name: str, input_name: str, accepted: tuple[str, ...], node: str) -> ModelSource:
    """Read only configs and headers: which model `path` holds, checked against the classes `node` loads."""
    if path.is_dir():
        source = _find_in_folder(path, name, input_name, accepted)
    elif path.suffix.lower() == ".safetensors":
        source = _single_file_source(path, name, input_name)
    else:
        raise ModelLoadError(f"{input_name} {name!r} is a {path.suffix or 'suffix-less'} file; {node} reads a "
                             "diffusers folder or a .safetensors file written by GenArt Save Model")
    if source.class_name not in accepted:
        hint = (f"load it with {LOADER_FOR[source.class_name]} instead" if source.class_name in LOADER_FOR
                else "this node cannot use it")
        raise ModelLoadError(f"{input_name} {name!r} holds a model of class {source.class_name}; {node} loads "
                             f"{' or '.join(accepted)}: {hint}")
    return source


def _find_in_folder(path: Path, name: str, input_name: str, accepted: tuple[str, ...]) -> ModelSource:
    config_file = path / "config.json"
    if config_file.is_file():
        config = read_json(config_file, input_name)
        class_name = config.get("_class_name")
        if not isinstance(class_name, str):
            kind = config.get("model_type") or (config.get("architectures") or ["an unknown model"])[0]
            raise ModelLoadError(f"{input_name} {name!r}: its config.json has no '_class_name', so it is not a "
                                 f"diffusers model folder (it describes {kind})")
        return ModelSource(path, class_name)
    index_file = path / "model_index.json"
    if index_file.is_file():
        index = read_json(index_file, input_name)
        parts = {k: v[1] for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1]}
        matches = [k for k, cls in parts.items() if cls in accepted and (path / k / "config.json").is_file()]
        if len(matches) == 1:
            return ModelSource(path / matches[0], parts[matches[0]])
        listed = ", ".join(f"{k} ({cls})" for k, cls in parts.items()) or "none"
        if not matches:
            raise ModelLoadError(f"{input_name} {name!r} is a pipeline folder without a {' or '.join(accepted)} "
                                 f"component (it has: {listed})")
        raise ModelLoadError(f"{input_name} {name!r} is a pipeline folder with several {' or '.join(accepted)} "
                             f"components ({', '.join(matches)}); pick one: {name}/{matches[0]}")
    raise ModelLoadError(f"{input_name} {name!r} is a folder without config.json or model_index.json; a diffusers "
                         "model folder holds config.json next to its weights")


def model_class(class_name: str) -> Any:
    """The class a config's `_class_name` names: one of the library's own models or a diffusers model class."""
    import diffusers

    if class_name == "ImageClassifier":
        from ..classifier import ImageClassifier

        return ImageClassifier
    if class_name in GENART_CLASSES:
        from .. import gan_models

        return getattr(gan_models, class_name)
    cls = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ModelLoadError(f"{class_name!r} is neither a diffusers model class nor one of GenArt's "
                             f"({', '.join(GENART_CLASSES)})")
    return cls


def load_model(source: ModelSource, name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The diffusers model `source` points at, with its weights, on `device` in `dtype`."""
    cls = model_class(source.class_name)
    with torch.inference_mode(False):
        if source.config is None:
            try:
                model = cls.from_pretrained(source.path, local_files_only=True, torch_dtype=dtype)
            except (OSError, ValueError, RuntimeError) as err:
                raise ModelLoadError(f"{name!r}: diffusers could not load {source.path}: {err}") from err
            return finish(model, device, dtype)
        config = source.config
        model = fill_strict(empty_model(lambda: cls.from_config(config)), read_safetensors(source.path)[0],
                            repr(name))
        return finish(model, device, dtype, owned=True)


def _recorded(path: Path, places: tuple[tuple[str, tuple[str, ...]], ...], kind: type) -> Any:
    """The first value of type `kind` found at `keys` in one of the JSON files (relative to `path`)."""
    for file, keys in places:
        record = path / file
        if record.is_file():
            try:
                value: Any = json.loads(record.read_text())
                for key in keys:
                    value = value.get(key)
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(value, kind) and not isinstance(value, bool):
                return value
    return None


def trained_prediction_type(path: Path) -> str | None:
    """What a UNet folder says it predicts: genart_training.json (written by GenArt training), or for a
    diffusers pipeline folder its scheduler's config, as the pipelines themselves read it. None if neither."""
    return _recorded(path, ((TRAINING_FILE, ("config", "prediction_type")),
                            ("scheduler/scheduler_config.json", ("prediction_type",))), str)


def trained_latent_scale(path: Path) -> float | None:
    """The latent scale a UNet folder records: genart_training.json, or for a diffusers pipeline folder its
    autoencoder's scaling_factor (vae/ or vqvae/), as the pipelines read it. None if none does."""
    value = _recorded(path, ((TRAINING_FILE, ("latent_scale",)), ("vae/config.json", ("scaling_factor",)),
                             ("vqvae/config.json", ("scaling_factor",))), (int, float))
    return float(value) if value else None
