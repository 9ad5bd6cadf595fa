"""Model loaders and the model save node, all offline.

Formats: diffusers folders (config.json + weights), also picked out of a diffusers pipeline folder
(model_index.json); our single-file `.safetensors` (config and class name in the metadata, written by
GenArt Save Model); Stable Diffusion 1.x single-file checkpoints (the LDM key layout) read with a local
diffusers config folder, the SD 1.5 one shipped in `models/configs/stable-diffusion-v1-5`. Nothing here
reaches a hub: every load gets a local path and `local_files_only=True`.

Models are created outside inference mode (their weights are ordinary tensors, so attack and training
nodes can backpropagate through them), in eval mode, with `requires_grad` off.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs, Widget
from ..graph.safety import UnsafePathError, atomic_write, confine, next_counter, output_prefix, ui_file
from ..graph.weights import load_state_dict, own_memory, read_safetensors, storages
from .handles import (
    TRAINING_FILE,
    Autoencoder,
    AutoencoderHandle,
    Denoiser,
    DenoiserHandle,
    Scheduler,
    SchedulerHandle,
    TextEncoder,
    TextEncoderHandle,
    VQModel,
    VQModelHandle,
)
from .io import check_prefix

DeviceChoice = Literal["auto", "cpu", "cuda"]
DtypeChoice = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE_HELP = "where the model lives: 'auto' = the run's device (--device, or ComfyUI's), 'cpu' or 'cuda'"
DTYPE_HELP = "weight precision: 'auto' = the run's dtype (--dtype, float32 by default), float32, float16 or bfloat16"

# Config folders shipped with the pack (found after the models folders' own `configs/`).
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
SD15_CONFIG = "stable-diffusion-v1-5"
# Which of our nodes loads which diffusers class (for "use that node instead" hints).
LOADER_FOR = {"VQModel": "GenArtLoadVQModel", "AutoencoderKL": "GenArtLoadAutoencoder",
              "UNet2DModel": "GenArtLoadDenoiser", "UNet2DConditionModel": "GenArtLoadDenoiser"}
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
# SD 1.x checkpoints (LDM layout): where each component's weights live.
LDM_UNET = "model.diffusion_model."
LDM_EMA = "model_ema."
LDM_VAE = "first_stage_model."
LDM_CLIP = "cond_stage_model.transformer."


class ModelLoadError(ValueError):
    """A model file or folder is missing, of the wrong kind, or does not match its config."""


# ---------------------------------------------------------------------------------------------------
# Shared helpers


def resolve_device(choice: str, ctx: RunContext) -> torch.device:
    if choice == "auto":
        return torch.device(ctx.device)
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was chosen but torch sees no CUDA GPU; choose 'auto' or 'cpu'")
    return torch.device(choice)


def resolve_dtype(choice: str, ctx: RunContext) -> torch.dtype:
    return ctx.dtype if choice == "auto" else DTYPES[choice]


def device_problems(constants: dict[str, Any]) -> list[tuple[str, str]]:
    if constants.get("device") == "cuda" and not torch.cuda.is_available():
        return [("device", "device 'cuda' was chosen but torch sees no CUDA GPU on this machine; "
                 "choose 'auto' or 'cpu'")]
    return []


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


def model_path(ctx: RunContext, kind: str, name: str, input_name: str) -> Path:
    """The file or folder `name` inside the models/<kind> folders; a clear error when it is not there."""
    path = ctx.paths.resolve_input(f"models/{kind}", name)
    if not path.exists():
        roots = ", ".join(str(r) for r in ctx.paths.roots(f"models/{kind}"))
        there = ctx.paths.list_files(f"models/{kind}", (".safetensors",), folders=True)
        listed = ", ".join(there[:12]) + (f" and {len(there) - 12} more" if len(there) > 12 else "")
        hint = (" (the tiny-* test models: `python tests/tiny_models.py DIR` writes them, then --models-dir DIR)"
                if name.startswith("tiny-") else "")
        raise ModelLoadError(f"{input_name} {name!r} was not found in the {kind} model folders ({roots}); "
                             f"there: {listed or 'nothing yet'}{hint}")
    return path


# ---------------------------------------------------------------------------------------------------
# Diffusers models: a folder, a component of a pipeline folder, or our single file


@dataclass(frozen=True)
class ModelSource:
    """Where a diffusers model's weights are: a folder with config.json, or one of our single files."""

    path: Path
    class_name: str
    config: dict[str, Any] | None = None  # single files: the config from the metadata


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


def load_model(source: ModelSource, name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The diffusers model `source` points at, with its weights, on `device` in `dtype`."""
    import diffusers

    cls = getattr(diffusers, source.class_name)
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


def model_file_problems(constants: dict[str, Any], ctx: RunContext, kind: str, accepted: tuple[str, ...],
                        node: str) -> list[tuple[str, str]]:
    """Validation-time check of a loader: the device exists, the model exists and is of a class it loads."""
    problems = device_problems(constants)
    name = constants.get("model_name")
    if isinstance(name, str):
        try:
            find_model(model_path(ctx, kind, name, "model_name"), name, "model_name", accepted, node)
        except (ModelLoadError, UnsafePathError) as err:
            problems.append(("model_name", str(err)))
    return problems


def _model_file(kind: str) -> Any:
    return FileInput(f"models/{kind}", (".safetensors",), folders=True)


MODEL_HELP = ("a diffusers folder (config.json + weights), a pipeline folder holding one such component, or a "
              "GenArt single-file .safetensors (config in its metadata), inside the models/{kind} folders")


class LoadVQModel(Node):
    """Load a VQ autoencoder (diffusers VQModel): encoder, vector quantizer and decoder."""

    CLASS_TYPE = "GenArtLoadVQModel"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load VQ Model"

    class Outputs(NodeOutputs):
        vqmodel: VQModel = Field(description="the VQModel, frozen, in eval mode")

    model_name: Annotated[str, _model_file("vqgan")] = Field(description=MODEL_HELP.format(kind="vqgan"))
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return model_file_problems(constants, ctx, "vqgan", ("VQModel",), cls.CLASS_TYPE)

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "vqgan", self.model_name, "model_name")
        source = find_model(path, self.model_name, "model_name", ("VQModel",), self.CLASS_TYPE)
        model = load_model(source, self.model_name, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        return self.Outputs(vqmodel=VQModelHandle(model, source=f"vqgan/{self.model_name}"))


class LoadAutoencoder(Node):
    """Load a KL autoencoder (diffusers AutoencoderKL), the VAE of latent diffusion models."""

    CLASS_TYPE = "GenArtLoadAutoencoder"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Autoencoder (KL)"

    class Outputs(NodeOutputs):
        autoencoder: Autoencoder = Field(description="the AutoencoderKL, frozen, in eval mode")

    model_name: Annotated[str, _model_file("vae")] = Field(description=MODEL_HELP.format(kind="vae"))
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return model_file_problems(constants, ctx, "vae", ("AutoencoderKL",), cls.CLASS_TYPE)

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "vae", self.model_name, "model_name")
        source = find_model(path, self.model_name, "model_name", ("AutoencoderKL",), self.CLASS_TYPE)
        model = load_model(source, self.model_name, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        return self.Outputs(autoencoder=AutoencoderHandle(model, source=f"vae/{self.model_name}"))


class LoadDenoiser(Node):
    """Load a diffusion UNet: UNet2DModel (unconditional) or UNet2DConditionModel (text-conditioned)."""

    CLASS_TYPE = "GenArtLoadDenoiser"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Denoiser (UNet)"

    class Outputs(NodeOutputs):
        denoiser: Denoiser = Field(description="the UNet with its latent scale, frozen, in eval mode")

    model_name: Annotated[str, _model_file("unet")] = Field(description=MODEL_HELP.format(kind="unet"))
    latent_scale: Annotated[float, Widget(step=0.00001)] = Field(
        0.0, ge=0.0, le=100.0, description="factor between raw LATENTs and what the UNet was trained on (the "
        "VAE's scaling_factor: 0.18215 for SD 1.x). 0 = auto: what the model folder records (genart_training.json "
        "of a UNet trained here, a pipeline folder's vae/ or vqvae/ scaling_factor), else 1.0")
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return model_file_problems(constants, ctx, "unet", UNET_CLASSES, cls.CLASS_TYPE)

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "unet", self.model_name, "model_name")
        source = find_model(path, self.model_name, "model_name", UNET_CLASSES, self.CLASS_TYPE)
        model = load_model(source, self.model_name, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        scale = self.latent_scale or trained_latent_scale(path) or 1.0
        return self.Outputs(denoiser=DenoiserHandle(model, scale, source=f"unet/{self.model_name}",
                                                    prediction_type=trained_prediction_type(path)))


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


# ---------------------------------------------------------------------------------------------------
# Schedulers

SchedulerKind = Literal["DDPM", "DDIM", "Euler", "EulerAncestral", "DPMSolverMultistep", "UniPC", "LCM"]
SCHEDULER_CLASSES = {
    "DDPM": "DDPMScheduler", "DDIM": "DDIMScheduler", "Euler": "EulerDiscreteScheduler",
    "EulerAncestral": "EulerAncestralDiscreteScheduler", "DPMSolverMultistep": "DPMSolverMultistepScheduler",
    "UniPC": "UniPCMultistepScheduler", "LCM": "LCMScheduler",
}
CLIPPING_KINDS = ("DDPM", "DDIM", "LCM")  # the schedulers with a clip_sample option


def scheduler_handle(class_name: str, config: dict[str, Any], what: str) -> SchedulerHandle:
    """A handle for a diffusers scheduler class (only real scheduler classes; names come from files)."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelLoadError(f"{what}: {class_name!r} is not a diffusers scheduler class; use one such as "
                             "DDIMScheduler, EulerDiscreteScheduler or DPMSolverMultistepScheduler")
    try:  # fail here, not in the sampler, on a bad config
        scheduler = cls.from_config(config)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ModelLoadError(f"{what}: {class_name} refused its config: {err}") from err
    public = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return SchedulerHandle(class_name, public)


class LoadScheduler(Node):
    """Make a diffusers noise scheduler from its kind and noise schedule (the training betas)."""

    CLASS_TYPE = "GenArtLoadScheduler"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Scheduler"

    class Outputs(NodeOutputs):
        scheduler: Scheduler = Field(description="the scheduler (class name + config; each user builds a fresh one)")

    kind: SchedulerKind = Field("DDIM", description="the sampler: DDPM, DDIM, Euler, EulerAncestral, "
                                "DPMSolverMultistep (DPM-Solver++), UniPC or LCM (diffusers' classes)")
    num_train_timesteps: int = Field(1000, ge=1, le=10000, description="timesteps the denoiser was trained with")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "linear", description="how betas grow from beta_start to beta_end ('scaled_linear' for SD 1.x, "
        "'squaredcos_cap_v2' is the cosine schedule, which ignores beta_start/beta_end)")
    beta_start: Annotated[float, Widget(step=0.00001)] = Field(
        0.0001, gt=0.0, lt=1.0, description="first beta (0.00085 for SD 1.x)")
    beta_end: Annotated[float, Widget(step=0.00001)] = Field(
        0.02, gt=0.0, lt=1.0, description="last beta (0.012 for SD 1.x)")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon", description="what the denoiser predicts: the noise, v, or the clean sample")
    clip_sample: bool = Field(False, description="DDPM, DDIM and LCM only: clamp the predicted clean sample to "
                              "[-1, 1] (for pixel-space models; latents must not be clamped)")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = []
        start, end = constants.get("beta_start", 0.0001), constants.get("beta_end", 0.02)
        if constants.get("beta_schedule", "linear") != "squaredcos_cap_v2" and start >= end:
            problems.append(("beta_end", f"beta_end {end} must be larger than beta_start {start}"))
        kind = constants.get("kind", "DDIM")
        if constants.get("clip_sample") and kind not in CLIPPING_KINDS:
            problems.append(("clip_sample", f"clip_sample=True has no effect on {kind}; it applies to "
                             f"{', '.join(CLIPPING_KINDS)} only: set it to False"))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        config: dict[str, Any] = {
            "num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type}
        if self.kind in CLIPPING_KINDS:
            config["clip_sample"] = self.clip_sample
        return self.Outputs(scheduler=scheduler_handle(SCHEDULER_CLASSES[self.kind], config, "kind"))


def find_scheduler_config(path: Path, name: str, input_name: str) -> Path:
    """scheduler_config.json in a scheduler folder, in a pipeline folder's scheduler/, or the file itself."""
    for candidate in (path, path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"{input_name} {name!r} holds no scheduler_config.json (nor scheduler/scheduler_config"
                         ".json); point it at a diffusers scheduler folder or its JSON file")


def load_scheduler_config(path: Path, name: str, input_name: str) -> SchedulerHandle:
    config = read_json(find_scheduler_config(path, name, input_name), input_name)
    class_name = config.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelLoadError(f"{input_name} {name!r}: the scheduler config has no '_class_name'")
    return scheduler_handle(class_name, config, f"{input_name} {name!r}")


class LoadSchedulerConfig(Node):
    """Load a diffusers noise scheduler from its folder (scheduler_config.json), as from_pretrained does."""

    CLASS_TYPE = "GenArtLoadSchedulerConfig"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Scheduler Config"

    class Outputs(NodeOutputs):
        scheduler: Scheduler = Field(description="the scheduler (class name + config; each user builds a fresh one)")

    scheduler_name: Annotated[str, FileInput("models/schedulers", (".json",), folders=True)] = Field(
        description="a diffusers scheduler folder, its scheduler_config.json, or a pipeline folder with "
        "scheduler/, inside the models/schedulers folders")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        name = constants.get("scheduler_name")
        if not isinstance(name, str):
            return []
        try:
            load_scheduler_config(model_path(ctx, "schedulers", name, "scheduler_name"), name, "scheduler_name")
        except (ModelLoadError, UnsafePathError) as err:
            return [("scheduler_name", str(err))]
        return []

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "schedulers", self.scheduler_name, "scheduler_name")
        return self.Outputs(scheduler=load_scheduler_config(path, self.scheduler_name, "scheduler_name"))


# ---------------------------------------------------------------------------------------------------
# CLIP text encoder + tokenizer


def find_text_encoder(path: Path, name: str, input_name: str) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder): one folder holding both, or a pipeline's text_encoder/ + tokenizer/."""
    if not path.is_dir():
        raise ModelLoadError(f"{input_name} {name!r} is a file; a CLIP text encoder is a folder (config.json, "
                             "weights, vocab.json + merges.txt)")
    if (path / "config.json").is_file():
        encoder, tokenizer = path, path
    elif (path / "text_encoder" / "config.json").is_file():
        encoder, tokenizer = path / "text_encoder", path / "tokenizer"
    else:
        raise ModelLoadError(f"{input_name} {name!r} holds neither config.json nor text_encoder/config.json")
    config = read_json(encoder / "config.json", input_name)
    model_type = config.get("model_type")
    if model_type not in ("clip_text_model", "clip"):
        found = model_type or config.get("_class_name") or "unknown"
        raise ModelLoadError(f"{input_name} {name!r} holds a model of type {found}; this node loads CLIP text "
                             "encoders (model_type 'clip_text_model')")
    if not any(all((tokenizer / f).is_file() for f in files) for files in TOKENIZER_FILES):
        raise ModelLoadError(f"{input_name} {name!r}: no CLIP tokenizer in {tokenizer} (needs vocab.json + "
                             "merges.txt, or tokenizer.json)")
    return encoder, tokenizer


def load_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


class LoadTextEncoder(Node):
    """Load a CLIP text encoder with its tokenizer (transformers CLIPTextModel + CLIPTokenizer)."""

    CLASS_TYPE = "GenArtLoadTextEncoder"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Text Encoder (CLIP)"

    class Outputs(NodeOutputs):
        text_encoder: TextEncoder = Field(description="tokenizer + CLIPTextModel, frozen, in eval mode")

    model_name: Annotated[str, FileInput("models/text_encoders", folders=True)] = Field(
        description="a folder with the CLIP text encoder (config.json + weights) and its tokenizer (vocab.json "
        "+ merges.txt), or a pipeline folder with text_encoder/ and tokenizer/, inside models/text_encoders")
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = device_problems(constants)
        name = constants.get("model_name")
        if isinstance(name, str):
            try:
                find_text_encoder(model_path(ctx, "text_encoders", name, "model_name"), name, "model_name")
            except (ModelLoadError, UnsafePathError) as err:
                problems.append(("model_name", str(err)))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        from transformers import CLIPTextModel

        path = model_path(ctx, "text_encoders", self.model_name, "model_name")
        encoder_dir, tokenizer_dir = find_text_encoder(path, self.model_name, "model_name")
        with torch.inference_mode(False):
            try:
                encoder = CLIPTextModel.from_pretrained(str(encoder_dir), local_files_only=True)
            except (OSError, ValueError, RuntimeError) as err:
                raise ModelLoadError(f"model_name {self.model_name!r}: transformers could not load "
                                     f"{encoder_dir}: {err}") from err
            encoder = finish(encoder, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        handle = TextEncoderHandle(load_tokenizer(tokenizer_dir), encoder, source=f"text_encoders/{self.model_name}")
        return self.Outputs(text_encoder=handle)


# ---------------------------------------------------------------------------------------------------
# Stable Diffusion 1.x single-file checkpoints

SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def resolve_config_folder(ctx: RunContext, name: str) -> Path:
    """A diffusers config folder from the models/configs folders, else from the configs shipped with the pack."""
    path = ctx.paths.resolve_input("models/configs", name)
    if not path.is_dir():
        shipped = confine(SHIPPED_CONFIGS, name, what="config")
        if shipped.is_dir():
            path = shipped
        else:
            roots = ", ".join(str(r) for r in [*ctx.paths.roots("models/configs"), SHIPPED_CONFIGS])
            raise ModelLoadError(f"config {name!r} was not found in {roots}; use {SD15_CONFIG!r} (shipped) or a "
                                 "diffusers pipeline folder with unet/, vae/, text_encoder/, tokenizer/, scheduler/")
    missing = [p for p in SD_PARTS if not (path / p).is_dir()]
    if missing:
        raise ModelLoadError(f"config {name!r} ({path}) lacks {', '.join(p + '/' for p in missing)}; a config folder "
                             f"is a diffusers pipeline folder without weights, like {SD15_CONFIG}")
    return path


def _prefixes(state: dict[str, Any]) -> str:
    heads = sorted({".".join(k.split(".")[:2]) for k in state})
    return ", ".join(heads[:8]) + (", ..." if len(heads) > 8 else "")


def _component(state: dict[str, torch.Tensor], prefix: str, what: str, name: str) -> dict[str, torch.Tensor]:
    part = {k: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise ModelLoadError(
            f"ckpt_name {name!r} holds no {what} weights under {prefix!r}, so it is not a full Stable Diffusion 1.x "
            f"checkpoint (its keys start with: {_prefixes(state)}). SD 2.x keeps OpenCLIP at cond_stage_model.model., "
            "SDXL uses conditioner.*; neither is SD 1.x")
    return part


def _ema_unet(state: dict[str, torch.Tensor], unet: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The UNet's EMA weights: LDM stores them flattened, model_ema.diffusion_modelinput_blocks00weight."""
    flat = {k: LDM_EMA + ("diffusion_model." + k[len(LDM_UNET):]).replace(".", "") for k in unet}
    absent = [v for v in flat.values() if v not in state]
    if absent:
        raise ModelLoadError(f"use_ema is on but ckpt_name {name!r} has no EMA copy of {len(absent)} UNet weights "
                             f"(e.g. {absent[0]}); turn use_ema off (pruned 'emaonly' files already hold the EMA "
                             "weights as the model)")
    return {k: state[flat[k]] for k in unet}


def _converted(converted: dict[str, Any], what: str, name: str) -> dict[str, Any]:
    """Diffusers' converters leave None for an LDM key they expected and did not find."""
    absent = [k for k, v in converted.items() if v is None]
    if absent:
        raise ModelLoadError(f"ckpt_name {name!r}: the {what} lacks weights the config needs (e.g. {absent[0]}); "
                             "does the config folder match this checkpoint?")
    return converted


def _all_used(converted: dict[str, Any], source: dict[str, torch.Tensor], what: str, name: str) -> None:
    """The converters map LDM keys one to one and skip keys they do not know: none may be left over."""
    if len(converted) != len(source):
        raise ModelLoadError(f"ckpt_name {name!r}: {len(source)} {what} weights in the file but only "
                             f"{len(converted)} belong to the config's architecture; does the config folder match "
                             "this checkpoint?")


def clip_state(clip: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """LDM CLIP keys (with or without 'text_model.') to the loaded transformers version's layout."""
    wrapped = any(k.startswith("text_model.") for k in model_keys)
    out = {}
    for key, value in clip.items():
        bare = key[len(LDM_CLIP):].removeprefix("text_model.")
        if bare == "embeddings.position_ids":  # a fixed arange (corrupted in some files); rebuilt by the model
            continue
        out["text_model." + bare if wrapped else bare] = value
    return out


@dataclass
class SD1Models:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: SchedulerHandle


def build_sd1_models(state: dict[str, torch.Tensor], name: str, config_dir: Path, use_ema: bool) -> tuple[Any, ...]:
    """(UNet, VAE, CLIP text encoder) from an LDM-layout SD 1.x state dict, converted with diffusers'
    own converters and filled strictly: every weight used, none missing, shapes as the config says."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_ldm = _component(state, LDM_UNET, "UNet", name)
    vae_ldm = _component(state, LDM_VAE, "VAE", name)
    clip_ldm = _component(state, LDM_CLIP, "CLIP text encoder", name)
    if use_ema:
        unet_ldm = _ema_unet(state, unet_ldm, name)

    unet_config = UNet2DConditionModel.load_config(config_dir / "unet", local_files_only=True)
    unet_sd = _converted(convert_ldm_unet_checkpoint(unet_ldm, dict(unet_config)), "UNet", name)
    unet = fill_strict(empty_model(lambda: UNet2DConditionModel.from_config(unet_config)), unet_sd,
                       f"{name!r} UNet")
    _all_used(unet_sd, unet_ldm, "UNet", name)

    vae_config = AutoencoderKL.load_config(config_dir / "vae", local_files_only=True)
    vae_sd = _converted(convert_ldm_vae_checkpoint(vae_ldm, dict(vae_config)), "VAE", name)
    vae = fill_strict(empty_model(lambda: AutoencoderKL.from_config(vae_config)), vae_sd, f"{name!r} VAE")
    _all_used(vae_sd, vae_ldm, "VAE", name)

    clip_config = CLIPTextConfig.from_pretrained(str(config_dir / "text_encoder"), local_files_only=True)
    clip = empty_model(lambda: CLIPTextModel(clip_config))
    clip = fill_strict(clip, clip_state(clip_ldm, set(clip.state_dict())), f"{name!r} CLIP text encoder")
    return unet, vae, clip


def load_sd1_checkpoint(path: Path, name: str, config_dir: Path, use_ema: bool, device: torch.device,
                        dtype: torch.dtype) -> SD1Models:
    with torch.inference_mode(False):
        unet, vae, clip = (finish(m, device, dtype, owned=True)
                           for m in build_sd1_models(load_state_dict(path), name, config_dir, use_ema))
    scheduler = load_scheduler_config(config_dir / "scheduler", f"{config_dir.name}/scheduler", "config")
    return SD1Models(unet, vae, clip, load_tokenizer(config_dir / "tokenizer"), scheduler)


class LoadSD15Checkpoint(Node):
    """Load a Stable Diffusion 1.x single-file checkpoint (.safetensors/.ckpt, LDM layout) offline."""

    CLASS_TYPE = "GenArtLoadSD15Checkpoint"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load SD1.5 Checkpoint"

    class Outputs(NodeOutputs):
        autoencoder: Autoencoder = Field(description="the checkpoint's VAE (AutoencoderKL)")
        denoiser: Denoiser = Field(description="the checkpoint's UNet2DConditionModel; latent_scale = the VAE "
                                   "config's scaling_factor (0.18215)")
        text_encoder: TextEncoder = Field(description="the checkpoint's CLIP text encoder with the config's tokenizer")
        scheduler: Scheduler = Field(description="the config folder's scheduler (PNDM for the shipped SD 1.5 one)")

    ckpt_name: Annotated[str, FileInput("models/checkpoints", (".safetensors", ".ckpt"))] = Field(
        description="an SD 1.x checkpoint in the original LDM layout (model.diffusion_model.*, first_stage_model.*, "
        "cond_stage_model.transformer.*), inside models/checkpoints; .ckpt files are read weights-only")
    config: Annotated[str, FileInput("models/configs", folders=True)] = Field(
        SD15_CONFIG, description="diffusers config folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/ "
        f"configs, no weights) inside models/configs; {SD15_CONFIG!r} ships with the pack")
    use_ema: bool = Field(False, description="load the UNet's EMA weights (model_ema.*) from a checkpoint that "
                          "holds both copies; off = the model weights, as ComfyUI does")
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = device_problems(constants)
        name = constants.get("ckpt_name")
        if isinstance(name, str):
            path = ctx.paths.resolve_input("models/checkpoints", name)
            if not path.is_file():
                roots = ", ".join(str(r) for r in ctx.paths.roots("models/checkpoints"))
                problems.append(("ckpt_name", f"ckpt_name {name!r} was not found in the checkpoint folders ({roots})"))
        config = constants.get("config", SD15_CONFIG)
        if isinstance(config, str):
            try:
                resolve_config_folder(ctx, config)
            except (ModelLoadError, UnsafePathError) as err:
                problems.append(("config", str(err)))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        path = ctx.paths.resolve_input("models/checkpoints", self.ckpt_name)
        if not path.is_file():
            raise ModelLoadError(f"ckpt_name {self.ckpt_name!r} was not found in the checkpoint folders")
        config_dir = resolve_config_folder(ctx, self.config)
        m = load_sd1_checkpoint(path, self.ckpt_name, config_dir, self.use_ema, resolve_device(self.device, ctx),
                                resolve_dtype(self.dtype, ctx))
        source = f"checkpoints/{self.ckpt_name}"
        return self.Outputs(
            autoencoder=AutoencoderHandle(m.vae, source=source),
            denoiser=DenoiserHandle(m.unet, float(m.vae.config.scaling_factor), source=source,
                                    prediction_type=m.scheduler.config.get("prediction_type")),
            text_encoder=TextEncoderHandle(m.tokenizer, m.text_encoder, source=source),
            scheduler=m.scheduler)


# ---------------------------------------------------------------------------------------------------
# Saving


def single_file_bytes(model: Any) -> bytes:
    """A GenArt single-file model: the weights, with the config and class name in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": model.to_json_string(), "class_name": type(model).__name__, "format": "pt"}
    return save(tensors, metadata=metadata)


class SaveModel(Node):
    """Save models as single .safetensors files (config in the metadata) in the output folder."""

    CLASS_TYPE = "GenArtSaveModel"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Save Model"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        pass

    vqmodel: VQModel | None = Field(None, description="a VQModel to save (optional)")
    autoencoder: Autoencoder | None = Field(None, description="an AutoencoderKL to save (optional)")
    denoiser: Denoiser | None = Field(None, description="a UNet to save (optional)")
    filename_prefix: str = Field("GenArt/model", description="file name prefix; may contain subfolders; files are "
                                 "named <prefix>_<kind>_<counter>_.safetensors (kind: vqmodel, autoencoder, denoiser)")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        handles = {"vqmodel": self.vqmodel, "autoencoder": self.autoencoder, "denoiser": self.denoiser}
        given = {kind: h for kind, h in handles.items() if h is not None}
        if not given:
            raise ValueError("GenArtSaveModel got no model: connect at least one of vqmodel, autoencoder or denoiser")
        folder, stem = output_prefix(ctx.paths.output_dir, self.filename_prefix)
        saved = []
        for kind, handle in given.items():
            file = folder / f"{stem}_{kind}_{next_counter(folder, f'{stem}_{kind}'):05}_.safetensors"
            atomic_write(file, single_file_bytes(handle.model))
            saved.append({**ui_file(ctx.paths.output_dir, file), "kind": kind,
                          "class_name": type(handle.model).__name__})
        ctx.ui["models"] = saved
        return self.Outputs()
