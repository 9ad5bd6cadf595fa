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

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..core.formats.common import DTYPES, ModelLoadError, finish
from ..core.formats.diffusers_folders import (
    UNET_CLASSES,
    find_model,
    load_model,
    trained_latent_scale,
    trained_prediction_type,
)
from ..core.formats.schedulers import (
    CLIPPING_KINDS,
    SCHEDULER_CLASSES,
    SchedulerKind,
    load_scheduler_config,
    scheduler_handle,
)
from ..core.formats.sd1_checkpoint import SD15_CONFIG, SD_PARTS, SHIPPED_CONFIGS, load_sd1_checkpoint
from ..core.formats.single_file import single_file_bytes
from ..core.formats.text_encoders import (
    MINILM_HINT,
    MINILM_NAME,
    encoder_type,
    find_text_encoder,
    load_text_encoder,
    load_tokenizer,
    minilm_folder,
)
from ..core.handles import AutoencoderHandle, DenoiserHandle, GANHandle, TextEncoderHandle, VQModelHandle
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs, Widget
from ..graph.safety import (
    UnsafePathError,
    atomic_write,
    confine,
    next_counter,
    output_prefix,
    register_packaged_model,
    ui_file,
)
from .io import check_prefix
from .sockets import GAN, Autoencoder, Denoiser, Scheduler, TextEncoder, VQModel

DeviceChoice = Literal["auto", "cpu", "cuda"]
DtypeChoice = Literal["auto", "float32", "float16", "bfloat16"]
DEVICE_HELP = "where the model lives: 'auto' = the run's device (--device, or ComfyUI's), 'cpu' or 'cuda'"
DTYPE_HELP = "weight precision: 'auto' = the run's dtype (--dtype, float32 by default), float32, float16 or bfloat16"


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


def model_path(ctx: RunContext, kind: str, name: str, input_name: str) -> Path:
    """The file or folder `name` inside the models/<kind> folders; a clear error when it is not there."""
    path = ctx.paths.resolve_input(f"models/{kind}", name)
    if not path.exists():
        roots = ", ".join(str(r) for r in ctx.paths.roots(f"models/{kind}"))
        there = ctx.paths.list_files(f"models/{kind}", (".safetensors",), folders=True)
        listed = ", ".join(there[:12]) + (f" and {len(there) - 12} more" if len(there) > 12 else "")
        hint = (" (the tiny-* test models: `python tests/tiny_models.py DIR` writes them, then --models-dir DIR)"
                if name.startswith("tiny-") else "")
        if kind == "text_encoders" and name == MINILM_NAME:
            hint = f"; {MINILM_HINT}"
        raise ModelLoadError(f"{input_name} {name!r} was not found in the {kind} model folders ({roots}); "
                             f"there: {listed or 'nothing yet'}{hint}")
    return path


# ---------------------------------------------------------------------------------------------------
# Diffusers models: a folder, a component of a pipeline folder, or our single file


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


class LoadGAN(Node):
    """Load a GAN generator (GenArt's GANGenerator: z -> image, with per-block noise inputs)."""

    CLASS_TYPE = "GenArtLoadGAN"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load GAN"

    class Outputs(NodeOutputs):
        gan: GAN = Field(description="the GANGenerator, frozen, in eval mode")

    model_name: Annotated[str, _model_file("gan")] = Field(description=MODEL_HELP.format(kind="gan"))
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    dtype: DtypeChoice = Field("auto", description=DTYPE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return model_file_problems(constants, ctx, "gan", ("GANGenerator",), cls.CLASS_TYPE)

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "gan", self.model_name, "model_name")
        source = find_model(path, self.model_name, "model_name", ("GANGenerator",), self.CLASS_TYPE)
        model = load_model(source, self.model_name, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        return self.Outputs(gan=GANHandle(model, source=f"gan/{self.model_name}"))


# ---------------------------------------------------------------------------------------------------
# Schedulers


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
# Text encoder + tokenizer

# The shipped text model's encoder, listed under models/text_encoders when its package is installed.
register_packaged_model("text_encoders", MINILM_NAME, minilm_folder)


class LoadTextEncoder(Node):
    """Load a text encoder with its tokenizer: CLIP (CLIPTextModel + CLIPTokenizer) or a BERT-family encoder
    (AutoModel + AutoTokenizer, e.g. all-MiniLM-L6-v2: token states [B, T, 384] and their attention mask)."""

    CLASS_TYPE = "GenArtLoadTextEncoder"
    CATEGORY = "GenArt/models"
    DISPLAY_NAME = "GenArt Load Text Encoder"

    class Outputs(NodeOutputs):
        text_encoder: TextEncoder = Field(description="tokenizer + text encoder, frozen, in eval mode")

    model_name: Annotated[str, FileInput("models/text_encoders", folders=True)] = Field(
        description="a folder with the text encoder (config.json + weights) and its tokenizer, or a pipeline "
        f"folder with text_encoder/ and tokenizer/, inside models/text_encoders; '{MINILM_NAME}' is the "
        "encoder of the shipped genart-emoji32-text model, from the optional extra 'text'")
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
        path = model_path(ctx, "text_encoders", self.model_name, "model_name")
        encoder_dir, tokenizer_dir = find_text_encoder(path, self.model_name, "model_name")
        model_type = encoder_type(encoder_dir, "model_name")
        with torch.inference_mode(False):
            try:
                encoder = load_text_encoder(encoder_dir, model_type)
            except (OSError, ValueError, RuntimeError) as err:
                raise ModelLoadError(f"model_name {self.model_name!r}: transformers could not load "
                                     f"{encoder_dir}: {err}") from err
            encoder = finish(encoder, resolve_device(self.device, ctx), resolve_dtype(self.dtype, ctx))
        handle = TextEncoderHandle(load_tokenizer(tokenizer_dir, model_type), encoder,
                                   source=f"text_encoders/{self.model_name}")
        return self.Outputs(text_encoder=handle)


# ---------------------------------------------------------------------------------------------------
# Stable Diffusion 1.x single-file checkpoints


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
    gan: GAN | None = Field(None, description="a GAN generator to save (optional)")
    filename_prefix: str = Field("GenArt/model", description="file name prefix; may contain subfolders; files are "
                                 "named <prefix>_<kind>_<counter>_.safetensors (kind: vqmodel, autoencoder, denoiser, "
                                 "gan)")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        handles = {"vqmodel": self.vqmodel, "autoencoder": self.autoencoder, "denoiser": self.denoiser,
                   "gan": self.gan}
        given = {kind: h for kind, h in handles.items() if h is not None}
        if not given:
            raise ValueError("GenArtSaveModel got no model: connect at least one of vqmodel, autoencoder or denoiser, "
                             "or a gan")
        folder, stem = output_prefix(ctx.paths.output_dir, self.filename_prefix)
        saved = []
        for kind, handle in given.items():
            file = folder / f"{stem}_{kind}_{next_counter(folder, f'{stem}_{kind}'):05}_.safetensors"
            atomic_write(file, single_file_bytes(handle.model))
            saved.append({**ui_file(ctx.paths.output_dir, file), "kind": kind,
                          "class_name": type(handle.model).__name__})
        ctx.ui["models"] = saved
        return self.Outputs()
