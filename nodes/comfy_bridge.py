"""Bridges from ComfyUI's MODEL, VAE and CONDITIONING to GenArt's denoiser, scheduler, autoencoder and conditioning.

Inside ComfyUI they take what its Load Checkpoint and CLIP Text Encode hand out (SD 1.x and 2.x) and share its
weights; headless they take what the stand-ins of those nodes hand out. How the conversion works and what it
costs: core/comfy_bridge.py.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from ..core import comfy_bridge
from ..core.formats.schedulers import SCHEDULER_CLASSES, SchedulerKind, scheduler_handle
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from .sockets import Autoencoder, ComfyConditioning, ComfyModel, ComfyVAE, ConditioningSocket, Denoiser, Scheduler

# SD's diffusers schedulers count steps from 1 and leave the last alpha as trained (the released SD configs).
SD_SCHEDULER_SETTINGS: dict[str, Any] = {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
                                         "timestep_spacing": "leading"}


class DenoiserFromModel(Node):
    """Use ComfyUI's MODEL (SD 1.x/2.x, from Load Checkpoint) as a GenArt denoiser with the scheduler it was trained
    with: its prediction type and noise schedule read from the model, its UNet weights shared, not copied."""

    CLASS_TYPE = "GenArtDenoiserFromModel"
    CATEGORY = "GenArt/comfy"
    DISPLAY_NAME = "GenArt Denoiser From MODEL"

    class Outputs(NodeOutputs):
        denoiser: Denoiser = Field(description="the UNet as a diffusers UNet2DConditionModel on ComfyUI's weights; "
                                   "latent_scale = the model's latent scale factor (0.18215 for SD 1.x/2.x)")
        scheduler: Scheduler = Field(description="a diffusers scheduler of the chosen kind on the model's training "
                                     "schedule (betas, prediction type, zero-SNR rescaling)")

    model: ComfyModel = Field(description="ComfyUI's MODEL from Load Checkpoint (no LoRA or other patches)")
    kind: SchedulerKind = Field("Euler", description="the scheduler to hand out: DDPM, DDIM, Euler, EulerAncestral, "
                                "DPMSolverMultistep (DPM-Solver++), UniPC or LCM (diffusers' classes)")

    def run(self, ctx: RunContext) -> Outputs:
        model = comfy_bridge.diffusion_model(self.model)
        config = {**SD_SCHEDULER_SETTINGS, **model.schedule.diffusers_config}
        if self.kind not in ("DDPM", "DDIM", "LCM"):
            config = {k: v for k, v in config.items() if k not in ("set_alpha_to_one", "clip_sample")}
        return self.Outputs(denoiser=model.denoiser,
                            scheduler=scheduler_handle(SCHEDULER_CLASSES[self.kind], config, "kind"))


class AutoencoderFromVAE(Node):
    """Use ComfyUI's VAE (the SD 1.x/2.x KL-f8 autoencoder) as a GenArt autoencoder: encode, decode, attacks and
    DiffPure, its weights shared (attacks take a grad-ready copy, as for every model made in inference mode)."""

    CLASS_TYPE = "GenArtAutoencoderFromVAE"
    CATEGORY = "GenArt/comfy"
    DISPLAY_NAME = "GenArt Autoencoder From VAE"

    class Outputs(NodeOutputs):
        autoencoder: Autoencoder = Field(description="the VAE as a diffusers AutoencoderKL on ComfyUI's weights")

    vae: ComfyVAE = Field(description="ComfyUI's VAE from Load Checkpoint or Load VAE")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(autoencoder=comfy_bridge.autoencoder(self.vae))


class ConditioningFromComfy(Node):
    """Use ComfyUI's CONDITIONING (CLIP Text Encode outputs: positive and, for guidance, negative) as GenArt
    conditioning."""

    CLASS_TYPE = "GenArtConditioningFromComfy"
    CATEGORY = "GenArt/comfy"
    DISPLAY_NAME = "GenArt Conditioning From CONDITIONING"

    class Outputs(NodeOutputs):
        conditioning: ConditioningSocket = Field(
            description="prompt embeddings [1, tokens, dim] and the negative prompt's (same shape; prompts of "
                        "different lengths repeated to their least common multiple, as ComfyUI batches them)")

    positive: ComfyConditioning = Field(description="the prompt's CONDITIONING (one CLIP Text Encode output)")
    negative: ComfyConditioning | None = Field(
        None, description="the negative prompt's CONDITIONING; without it only cfg 1.0 is possible")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(conditioning=comfy_bridge.conditioning(self.positive, self.negative))
