"""ComfyUI's MODEL, VAE and CONDITIONING as GenArt handles, and the schedule a MODEL was trained on.

Design: the bridge converts, it does not wrap. ComfyUI's UNet and VAE weights (the LDM layout its loader keeps)
go through the same key conversion as GenArt's own SD 1.x loader into diffusers' UNet2DConditionModel and
AutoencoderKL, assigned, not copied: the diffusers modules hold ComfyUI's very tensors (no second copy of the
weights; the conversion only renames keys and takes views). So GenArt's samplers, attacks and DiffPure run
diffusers' code (its CPU attention, equal to GenArt's own loader bit for bit on the same file) on the weights
the user loaded. What it costs: ComfyUI's weight patches (LoRA and other model patches) are not seen; a MODEL
that carries patches is refused. Attacks take a grad-ready copy of weights ComfyUI made in inference mode
(core.autoencoders.grad_ready), as for any model.

Nothing here imports ComfyUI: its objects are read by attribute (ModelPatcher.model -> BaseModel with
model_config, model_sampling, latent_format, diffusion_model; VAE.first_stage_model). Headless, the stand-ins
carry GenArt's own objects (DiffusionModel, AutoencoderHandle, the CONDITIONING list), which pass through.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .formats.common import ModelLoadError, empty_model, fill_strict, finish
from .formats.sd1_checkpoint import LDM_UNET, SD15_CONFIG, SHIPPED_CONFIGS, _all_used, _converted
from .handles import AutoencoderHandle, Conditioning, DenoiserHandle
from .ksampling import DiffusionModel, DiscreteSchedule

# ComfyUI's supported_models classes the bridge converts: SD 1.x and SD 2.x (512 eps and 768 v-prediction).
CONVERTED_FAMILIES = ("SD15", "SD20")
SUPPORTED_TEXT = "Stable Diffusion 1.x and 2.x (ComfyUI's SD15 and SD20 model configs)"


def _family(model: Any) -> str:
    config = getattr(getattr(model, "model", None), "model_config", None)
    return type(config).__name__ if config is not None else type(model).__name__


def prediction_type_of(model_sampling: Any) -> str:
    """'epsilon' or 'v_prediction' from ComfyUI's model_sampling class (its MRO names EPS / V_PREDICTION)."""
    names = [c.__name__ for c in type(model_sampling).__mro__]
    if "ModelSamplingDiscrete" not in names or "EDM" in names or "CONST" in names:
        raise ValueError(f"input 'model' samples with {names[1] if len(names) > 1 else names[0]}, not a discrete DDPM "
                         f"schedule; the bridge converts {SUPPORTED_TEXT}")
    if "V_PREDICTION" in names:
        return "v_prediction"
    if "EPS" in names:
        return "epsilon"
    raise ValueError(f"input 'model' predicts neither noise nor v ({names}); the bridge converts {SUPPORTED_TEXT}")


def schedule_of(model: Any) -> DiscreteSchedule:
    """The training schedule of a ComfyUI MODEL: its own sigmas (zsnr rescaling included), its prediction type."""
    base = model.model
    sampling = base.model_sampling
    settings = dict(getattr(base.model_config, "sampling_settings", {}) or {})
    prediction = prediction_type_of(sampling)
    comfy_schedule = settings.get("beta_schedule", "linear")
    beta_schedule = {"linear": "scaled_linear", "sqrt_linear": "linear"}.get(comfy_schedule)
    if beta_schedule is None:
        raise ValueError(f"input 'model' has a {comfy_schedule!r} beta schedule, which diffusers' schedulers do not "
                         "take; the bridge converts 'linear' and 'sqrt_linear' schedules")
    config = {"num_train_timesteps": int(getattr(sampling, "num_timesteps", len(sampling.sigmas))),
              "beta_start": float(getattr(sampling, "linear_start", settings.get("linear_start", 0.00085))),
              "beta_end": float(getattr(sampling, "linear_end", settings.get("linear_end", 0.012))),
              "beta_schedule": beta_schedule, "prediction_type": prediction}
    if getattr(sampling, "zsnr", False):
        config["rescale_betas_zero_snr"] = True
    return DiscreteSchedule(sampling.sigmas.detach().float().cpu(), prediction, config)


def _unet_config(unet_config: dict[str, Any], shipped: dict[str, Any]) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel config from ComfyUI's unet_config (openaimodel's arguments)."""
    mults = list(unet_config["channel_mult"])
    res = unet_config["num_res_blocks"]
    per_level = res if isinstance(res, int) else res[0]
    depth = list(unet_config.get("transformer_depth") or [1] * (per_level * len(mults)))
    attends = [depth[i * per_level] > 0 for i in range(len(mults))]
    channels = [unet_config["model_channels"] * m for m in mults]
    head_channels = unet_config.get("num_head_channels", -1)
    heads = unet_config.get("num_heads", -1)
    return {**shipped,
            "in_channels": unet_config["in_channels"], "out_channels": unet_config["out_channels"],
            "block_out_channels": channels, "layers_per_block": per_level,
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
            "attention_head_dim": heads if head_channels == -1 else [c // head_channels for c in channels],
            "cross_attention_dim": unet_config["context_dim"],
            "use_linear_projection": bool(unet_config.get("use_linear_in_transformer", False))}


def _check_unpatched(model: Any) -> None:
    patches = getattr(model, "patches", None) or {}
    object_patches = getattr(model, "object_patches", None) or {}
    options = getattr(model, "model_options", None) or {}
    transformer = {k: v for k, v in (options.get("transformer_options") or {}).items() if v}
    changed = [k for k in options if k != "transformer_options"] + list(transformer)
    if patches or object_patches or changed:
        what = ("weight patches (LoRA)" if patches else "object patches" if object_patches
                else f"model options {sorted(changed)[:4]}")
        raise ValueError(f"input 'model' carries {what}; the bridge reads the checkpoint's own weights and would "
                         "silently drop them. Connect the MODEL straight from Load Checkpoint")


def diffusion_model(model: Any, config_dir: Path = SHIPPED_CONFIGS / SD15_CONFIG) -> DiffusionModel:
    """A GenArt denoiser and its schedule from ComfyUI's MODEL (a ModelPatcher), sharing its UNet weights."""
    if isinstance(model, DiffusionModel):
        return model
    family = _family(model)
    base = getattr(model, "model", None)
    if family not in CONVERTED_FAMILIES or base is None or not hasattr(base, "diffusion_model"):
        raise ValueError(f"input 'model' is a {family} model; the bridge converts {SUPPORTED_TEXT}. SDXL needs its "
                         "size and crop conditioning, other families another denoiser class: not supported yet")
    _check_unpatched(model)
    schedule = schedule_of(model)
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    shipped = dict(UNet2DConditionModel.load_config(config_dir / "unet", local_files_only=True))
    config = _unet_config(dict(base.model_config.unet_config), shipped)
    ldm = {LDM_UNET + k: v for k, v in base.diffusion_model.state_dict().items()}
    name = f"ComfyUI MODEL ({family})"
    state = _converted(convert_ldm_unet_checkpoint(ldm, config), "UNet", name)
    unet = fill_strict(empty_model(lambda: UNet2DConditionModel.from_config(config)), state, f"{name} UNet")
    _all_used(state, ldm, "UNet", name)
    dtype = next(base.diffusion_model.parameters()).dtype
    unet = finish(unet, next(base.diffusion_model.parameters()).device, dtype, owned=True)
    scale = float(base.latent_format.scale_factor)
    return DiffusionModel(DenoiserHandle(unet, latent_scale=scale, source=name,
                                         prediction_type=schedule.prediction_type), schedule)


def autoencoder(vae: Any, config_dir: Path = SHIPPED_CONFIGS / SD15_CONFIG) -> AutoencoderHandle:
    """A GenArt autoencoder from ComfyUI's VAE (SD 1.x/2.x KL-f8), sharing its weights."""
    if isinstance(vae, AutoencoderHandle):
        return vae
    first = getattr(vae, "first_stage_model", None)
    if first is None or type(first).__name__ not in ("AutoencoderKL", "AutoencodingEngine"):
        raise ValueError(f"input 'vae' holds a {type(first).__name__}, not the KL-f8 autoencoder of "
                         f"{SUPPORTED_TEXT}")
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = dict(AutoencoderKL.load_config(config_dir / "vae", local_files_only=True))
    ldm = first.state_dict()
    name = "ComfyUI VAE"
    try:
        state = _converted(convert_ldm_vae_checkpoint(ldm, config), "VAE", name)
        model = fill_strict(empty_model(lambda: AutoencoderKL.from_config(config)), state, f"{name}")
    except ModelLoadError as err:
        raise ValueError(f"input 'vae' is not the SD 1.x/2.x KL-f8 autoencoder the bridge converts ({err})") from err
    _all_used(state, ldm, "VAE", name)
    param = next(first.parameters())
    return AutoencoderHandle(finish(model, param.device, param.dtype, owned=True), source=name)


def _single(conditioning: Any, input_name: str) -> torch.Tensor:
    if isinstance(conditioning, Conditioning):
        return conditioning.cond
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"input {input_name!r} is not a ComfyUI CONDITIONING (a list of [embeddings, options])")
    if len(conditioning) > 1:
        raise ValueError(f"input {input_name!r} holds {len(conditioning)} conditionings (combined or concatenated "
                         "prompts); GenArt samplers take one: use one CLIP Text Encode (Prompt) per input")
    embeddings, options = conditioning[0][0], conditioning[0][1] if len(conditioning[0]) > 1 else {}
    unsupported = sorted(k for k in options if k not in ("pooled_output",) and options[k] is not None)
    if unsupported:
        raise ValueError(f"input {input_name!r} carries {unsupported}, which GenArt samplers do not apply; "
                         "give a plain CLIP Text Encode (Prompt) output")
    return embeddings


def _repeat_to(embeddings: torch.Tensor, tokens: int) -> torch.Tensor:
    return embeddings.repeat(1, tokens // embeddings.shape[1], 1)


def conditioning(positive: Any, negative: Any | None) -> Conditioning:
    """GenArt conditioning from ComfyUI's positive (and negative) CONDITIONING. Prompts of different lengths
    (ComfyUI encodes long prompts as several 77-token chunks) are repeated to their least common multiple, as
    ComfyUI does when it batches them."""
    cond = _single(positive, "positive")
    if negative is None:
        return Conditioning(cond)
    uncond = _single(negative, "negative")
    if cond.shape[-1] != uncond.shape[-1]:
        raise ValueError(f"inputs 'positive' and 'negative' have embeddings of width {cond.shape[-1]} and "
                         f"{uncond.shape[-1]}; encode both with the same CLIP")
    tokens = math.lcm(cond.shape[1], uncond.shape[1])
    return Conditioning(_repeat_to(cond, tokens), _repeat_to(uncond, tokens))
