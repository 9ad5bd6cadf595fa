"""Stable Diffusion 1.x single-file checkpoints written from diffusers models: the LDM key layout that
`sd1_checkpoint` reads and ComfyUI's Load Checkpoint detects, plus a seeded random full-size SD 1.5 for tests
and benches (no hub, no released weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS

RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                 "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> LDM `model.diffusion_model.*`.

    LDM numbers blocks flat: input_blocks.0 is conv_in; each down level has layers_per_block (resnet,
    attention) pairs then a downsampler (`.0.op`); middle_block is resnet, attention, resnet;
    output_blocks hold layers_per_block + 1 (resnet, attention) pairs per level, the upsampler after
    the last one (`.1.conv`, or `.2.conv` when the level has attention)."""
    per = config["layers_per_block"] + 1
    out = {}
    for key, value in state.items():
        p = key.split(".")
        if p[0] == "time_embedding":
            new = f"time_embed.{0 if p[1] == 'linear_1' else 2}.{p[2]}"
        elif p[0] in ("conv_in", "conv_norm_out", "conv_out"):
            new = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[p[0]] + "." + p[1]
        elif p[0] == "down_blocks":
            level, what = int(p[1]), p[2]
            if what == "downsamplers":
                new = f"input_blocks.{1 + level * per + per - 1}.0.op.{p[-1]}"
            else:
                block = 1 + level * per + int(p[3])
                rest = ".".join(p[4:])
                new = (f"input_blocks.{block}.0.{RESNET_TO_LDM[p[4]]}.{p[5]}" if what == "resnets"
                       else f"input_blocks.{block}.1.{rest}")
        elif p[0] == "mid_block":
            new = (f"middle_block.{2 * int(p[2])}.{RESNET_TO_LDM[p[3]]}.{p[4]}" if p[1] == "resnets"
                   else "middle_block.1." + ".".join(p[3:]))
        elif p[0] == "up_blocks":
            level, what = int(p[1]), p[2]
            if what == "upsamplers":
                has_attention = config["up_block_types"][level].startswith("CrossAttn")
                new = f"output_blocks.{level * per + per - 1}.{2 if has_attention else 1}.conv.{p[-1]}"
            else:
                block = level * per + int(p[3])
                new = (f"output_blocks.{block}.0.{RESNET_TO_LDM[p[4]]}.{p[5]}" if what == "resnets"
                       else f"output_blocks.{block}.1." + ".".join(p[4:]))
        else:
            raise ValueError(f"no LDM name for the diffusers UNet key {key!r}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM `first_stage_model.*`: encoder.down.{i}.block.{j}, decoder up
    levels numbered from the bottom (up.{n-1-i}), mid.block_1/attn_1/block_2, nin_shortcut, norm_out, and
    the mid attention's q/k/v/proj_out as 1x1 convolutions."""
    levels = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        p = key.split(".")
        side, rest = p[0], p[1:]
        if side in ("quant_conv", "post_quant_conv") or rest[0] in ("conv_in", "conv_out"):
            new = key
        elif rest[0] == "conv_norm_out":
            new = f"{side}.norm_out.{rest[1]}"
        elif rest[0] in ("down_blocks", "up_blocks"):
            i = int(rest[1])
            name, level = ("down", i) if side == "encoder" else ("up", levels - 1 - i)
            if rest[2] == "resnets":
                layer = rest[4].replace("conv_shortcut", "nin_shortcut")
                new = f"{side}.{name}.{level}.block.{rest[3]}.{layer}.{rest[5]}"
            else:
                new = f"{side}.{name}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.conv.{rest[-1]}"
        elif rest[1] == "resnets":
            new = f"{side}.mid.block_{int(rest[2]) + 1}.{rest[3].replace('conv_shortcut', 'nin_shortcut')}.{rest[4]}"
        else:
            inner = ".".join(rest[3:-1])
            new = f"{side}.mid.attn_1.{VAE_ATTENTION_TO_LDM[inner]}.{rest[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], with_text_model: bool = True) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys -> LDM `cond_stage_model.transformer.[text_model.]*`, with the
    position_ids buffer real checkpoints carry."""
    prefix = "cond_stage_model.transformer." + ("text_model." if with_text_model else "")
    out = {prefix + k.removeprefix("text_model."): v for k, v in state.items()}
    n = next(v for k, v in state.items() if k.endswith("position_embedding.weight")).shape[0]
    out[prefix + "embeddings.position_ids"] = torch.arange(n)[None]
    return out


def sd1_state(unet: Any, vae: Any, clip: Any) -> dict[str, torch.Tensor]:
    """One LDM-layout state dict (contiguous tensors) from diffusers' UNet and VAE and transformers' CLIP."""
    state = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
             **clip_to_ldm(clip.state_dict())}
    return {k: v.detach().contiguous() for k, v in state.items()}


def write_random_sd15(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16,
                      config_dir: Path = SHIPPED_CONFIGS / SD15_CONFIG) -> Path:
    """A full-size SD 1.5 checkpoint with random weights (torch.manual_seed(seed), diffusers' and transformers'
    own initialisation, then cast to `dtype`), written atomically to `path` (~2.1 GB in float16). The same seed
    gives the same bytes. Written beside a marker of the seed and dtype, so a finished file is reused."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    marker = path.with_name(path.name + ".done")
    stamp = f"seed={seed} dtype={dtype}"
    if path.is_file() and marker.is_file() and marker.read_text() == stamp:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config_dir / "text_encoder"), local_files_only=True))
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd1_state(unet, vae, clip).items()}
        del unet, vae, clip
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata={"genart_random_sd15": stamp})
    tmp.replace(path)
    marker.write_text(stamp)
    return path
