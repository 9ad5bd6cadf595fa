"""One denoising step as a pure node (the state machine is core.denoising), and the input descriptions the
sampler shares with it. A step node copies what it needs from its input latent and returns a new state, so it
caches, branches, and N chained steps equal one N-step GenArt Sample Latent bit for bit."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..core.denoising import begin_denoising, prepare_guidance
from ..core.noise import SEED_MAX
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from ..graph.safety import MAX_STEPS
from ..graph.types import Latent
from .sockets import ConditioningSocket, Denoiser, Scheduler

SEED_DESCRIPTION = ("seed of the CPU random stream: the initial noise is drawn from it with ComfyUI's "
                    "prepare_noise semantics, and stochastic schedulers (DDPM, Euler ancestral, LCM, ...) "
                    "continue the same stream for their step noise, as a diffusers pipeline does with one "
                    "generator. Read only when this node starts a denoising: a latent that is mid-denoising "
                    "carries its own stream")
CFG_DESCRIPTION = ("classifier-free guidance scale: uncond + cfg * (cond - uncond), one batched denoiser "
                   "call for both, as StableDiffusionPipeline; 1.0 runs the prompt alone (one call). "
                   "Unconditional denoisers have no guidance and do not read it")
CONDITIONING_DESCRIPTION = ("prompt and negative-prompt embeddings [1 or B, tokens, dim] from GenArt Encode "
                            "Text; required by a conditional denoiser (UNet2DConditionModel), refused by an "
                            "unconditional one")
NOISE_DESCRIPTION = ("initial noise to use instead of drawing it from `seed`: LATENT whose samples "
                     "[B, C, h, w] float are unit Gaussian noise in the denoiser's space (not multiplied by "
                     "latent_scale), same shape as `latent`. Read only when this node starts a denoising")
MASK_NOTE = ("a noise_mask (1 = denoise, resized to the latent as ComfyUI does) inpaints: before every step the "
             "kept area is set to the original noised to that step, and after the last step to the original")
ADD_NOISE_DESCRIPTION = ("when starting a denoising: on, the start is pure noise (first step) or `latent` "
                         "noised to the start step with the scheduler's add_noise (img2img); off, `latent` "
                         "(times latent_scale) is taken as already noised to the start step, as ComfyUI's "
                         "KSamplerAdvanced with add_noise disabled")


class DenoiseStep(Node):
    """Run one denoising step; chain these by hand to watch or edit a denoising step by step.

    Starts a denoising when `latent` carries none (pure noise at step 0, img2img at a later step), or
    continues the one it carries at its next step. The node is pure: its input stays untouched, so it
    caches, branches, and N chained steps equal one N-step GenArt Sample Latent bit for bit.
    """

    CLASS_TYPE = "GenArtDenoiseStep"
    CATEGORY = "GenArt/denoise"

    class Outputs(NodeOutputs):
        latent: Latent = Field(
            description="LATENT after the step: samples [B, C, h, w] unscaled (for decoders; noisy until the "
                        "last step), the input's noise_mask and batch_index, and the state for the next step")

    denoiser: Denoiser = Field(description="the denoising UNet (unconditional or text-conditioned)")
    scheduler: Scheduler = Field(
        description="diffusers scheduler: stateless (DDPM, DDIM) or stateful (Euler, Euler ancestral, "
                    "DPM-Solver++ multistep, UniPC, LCM, ...); its state travels in the latent")
    latent: Latent = Field(
        description="LATENT: samples [B, C, h, w] float, unscaled. With a denoising state (the output of a "
                    "step or a sampler that stopped early) it is continued; else it gives the shape and the image "
                    "for img2img, and " + MASK_NOTE)
    seed: int = Field(0, ge=0, le=SEED_MAX, description=SEED_DESCRIPTION)
    steps: int = Field(20, ge=1, le=MAX_STEPS,
                       description="steps of the whole schedule (scheduler.set_timesteps); the same in every "
                                   "node of a chain")
    step_index: int = Field(
        0, ge=0, le=MAX_STEPS - 1,
        description="index of the step this node runs, 0 = the noisiest, in the scheduler's timesteps (for "
                    "first-order schedulers the step number). A chain runs 0, 1, 2, ...; starting at k > 0 is "
                    "img2img that runs steps k..steps-1")
    cfg: Annotated[float, Widget(step=0.1)] = Field(7.5, ge=0.0, le=100.0, description=CFG_DESCRIPTION)
    add_noise: bool = Field(True, description=ADD_NOISE_DESCRIPTION)
    conditioning: ConditioningSocket | None = Field(None, description=CONDITIONING_DESCRIPTION)
    noise: Latent | None = Field(None, description=NOISE_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        denoising = begin_denoising(self.denoiser, self.scheduler, self.latent, seed=self.seed, steps=self.steps,
                                    start=self.step_index, add_noise=self.add_noise, noise=self.noise,
                                    start_input="step_index")
        guidance = prepare_guidance(self.denoiser, self.conditioning, self.cfg, denoising.x.shape[0])
        with ctx.progress(1) as bar:
            denoising.step(self.denoiser.model, guidance)
            bar.update()
        latent = denoising.output(self.latent, denoising.samples())
        return self.Outputs(latent=latent)
