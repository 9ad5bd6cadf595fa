"""Stable Diffusion 1.x single-file checkpoints (the LDM key layout), read with a local diffusers config
folder (the SD 1.5 one ships in models/configs/stable-diffusion-v1-5)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..handles import SchedulerHandle
from ..weights import load_state_dict
from .common import ModelLoadError, empty_model, fill_strict, finish
from .schedulers import load_scheduler_config
from .text_encoders import load_tokenizer

# Config folders shipped with the pack (found after the models folders' own `configs/`).
SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"


SD15_CONFIG = "stable-diffusion-v1-5"


# SD 1.x checkpoints (LDM layout): where each component's weights live.
LDM_UNET = "model.diffusion_model."


LDM_EMA = "model_ema."


LDM_VAE = "first_stage_model."


LDM_CLIP = "cond_stage_model.transformer."


SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


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
