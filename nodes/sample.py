"""The sampler: N denoising steps in one node, with img2img strength, start/end steps and a trajectory."""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

import torch
from pydantic import Field

from ..core.denoising import Guidance, begin_denoising, no_step_message, prepare_guidance
from ..core.noise import SEED_MAX
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from ..graph.safety import MAX_STEPS
from ..graph.types import Latent
from .denoise import (
    ADD_NOISE_DESCRIPTION,
    CFG_DESCRIPTION,
    CONDITIONING_DESCRIPTION,
    MASK_NOTE,
    NOISE_DESCRIPTION,
    SEED_DESCRIPTION,
)
from .sockets import ConditioningSocket, Denoiser, Scheduler


class SampleLatent(Node):
    """Denoise a latent in N steps (txt2img, img2img, partial runs), with a progress bar and an optional trajectory.

    Equals a diffusers pipeline's loop on the same model, scheduler, steps, guidance and seed, and
    equals N chained GenArt Denoise Step nodes bit for bit. A latent that carries an unfinished
    denoising (from a step node or a sampler stopped with end_step) is continued at its next step.
    """

    CLASS_TYPE = "GenArtSampleLatent"
    CATEGORY = "GenArt/sample"
    PERSIST_OUTPUTS = True  # minutes of work on big images: --cache-dir keeps it

    class Outputs(NodeOutputs):
        latent: Latent = Field(
            description="LATENT after the last step run: samples [B, C, h, w] unscaled (for decoders), the "
                        "input's noise_mask and batch_index; it carries the denoising state if end_step stopped "
                        "before the end, so another sampler or step node can continue it")
        trajectory: Latent = Field(
            description="LATENT of snapshots [B * K, C, h, w] unscaled, item-major (item 0's K snapshots, then "
                        "item 1's, ...), taken after every k-th step run and after the last one, so an image "
                        "grid with K columns shows one row per item; the final latent alone when k = 0")

    denoiser: Denoiser = Field(description="the denoising UNet (unconditional or text-conditioned)")
    scheduler: Scheduler = Field(
        description="diffusers scheduler (DDPM, DDIM, Euler, Euler ancestral, DPM-Solver++ multistep, UniPC, "
                    "LCM, ...); a fresh copy per run")
    latent: Latent = Field(
        description="LATENT: samples [B, C, h, w] float, unscaled: the shape for txt2img (an empty latent), "
                    "the image for img2img, or a latent mid-denoising to continue; " + MASK_NOTE)
    seed: int = Field(0, ge=0, le=SEED_MAX, description=SEED_DESCRIPTION)
    steps: int = Field(20, ge=1, le=MAX_STEPS, description="steps of the whole schedule (scheduler.set_timesteps)")
    cfg: Annotated[float, Widget(step=0.1)] = Field(7.5, ge=0.0, le=100.0, description=CFG_DESCRIPTION)
    denoise: float = Field(
        1.0, ge=0.0, le=1.0,
        description="img2img strength, diffusers' convention: run the last int(steps * denoise) steps of the "
                    "steps-step schedule, starting from the latent noised to that step (ComfyUI's KSampler "
                    "instead runs all steps of a longer schedule). 1.0 starts from pure noise. Leave at 1.0 "
                    "when start_step is set")
    start_step: int = Field(
        0, ge=0, le=MAX_STEPS - 1,
        description="first step to run, 0 = the noisiest (index in the scheduler's timesteps; the step number "
                    "for first-order schedulers); > 0 is img2img from that step, or the next step of a latent "
                    "mid-denoising. Leave at 0 when denoise < 1")
    end_step: int = Field(
        -1, ge=-1, le=MAX_STEPS,
        description="stop before this step (exclusive; -1 = run to the end). Stopping early hands out the "
                    "noisy latent with its denoising state, to be continued from start_step = end_step")
    add_noise: bool = Field(True, description=ADD_NOISE_DESCRIPTION)
    return_trajectory_every: int = Field(
        0, ge=0, le=MAX_STEPS,
        description="k: snapshot the latent after every k-th step run (and after the last) into 'trajectory'; "
                    "0 = off")
    conditioning: ConditioningSocket | None = Field(None, description=CONDITIONING_DESCRIPTION)
    noise: Latent | None = Field(None, description=NOISE_DESCRIPTION)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        """Where to start and stop, checked on the inputs given as constants (linked ones are checked at run)."""
        problems = []
        denoise, steps = constants.get("denoise"), constants.get("steps")
        start, end = constants.get("start_step"), constants.get("end_step")
        no_step = no_step_message(steps, denoise) if denoise is not None and steps is not None else None
        if no_step is not None:
            problems.append(("denoise", no_step))
        if denoise is not None and start is not None and denoise < 1.0 and start > 0:
            problems.append(("start_step", f"start_step {start} and denoise {denoise} both choose where to start; "
                                           "set start_step to 0 or denoise to 1.0"))
        if start is not None and end is not None and end != -1 and end <= start:
            problems.append(("end_step", f"end_step {end} is not after start_step {start}; the sampler would run "
                                         "no step (use -1 to run to the end)"))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        problems = self.check_constants(self.__dict__, ctx)  # again: linked widgets skip validation
        if problems:
            raise ValueError(f"input {problems[0][0]!r}: {problems[0][1]}")
        denoising = begin_denoising(self.denoiser, self.scheduler, self.latent, seed=self.seed, steps=self.steps,
                                    start=self.start_step, strength=self.denoise, add_noise=self.add_noise,
                                    noise=self.noise, start_input="start_step")
        end = denoising.total if self.end_step == -1 else self.end_step
        if end > denoising.total:
            raise ValueError(
                f"input 'end_step' = {self.end_step} is past the end: the schedule has {denoising.total} steps; "
                f"use -1 (or {denoising.total}) to run to the end")
        if end <= denoising.index:
            raise ValueError(f"input 'end_step' = {end} is not after the first step to run ({denoising.index})")
        guidance = prepare_guidance(self.denoiser, self.conditioning, self.cfg, denoising.x.shape[0])
        with ctx.progress(end - denoising.index) as bar, self.watch(denoising.index, guidance) as watcher:
            def on_step() -> None:
                watcher()
                bar.update()

            snapshots = denoising.run(self.denoiser.model, guidance, end, self.return_trajectory_every, on_step)
        samples = snapshots[-1] if snapshots else denoising.samples()
        latent = denoising.output(self.latent, samples)
        if snapshots:
            stacked = torch.stack(snapshots, dim=1)  # [B, K, C, h, w]: item-major once flattened
            trajectory = {"samples": stacked.reshape(-1, *stacked.shape[2:])}
        else:
            trajectory = {"samples": samples}
        return SampleLatent.Outputs(latent=latent, trajectory=trajectory)

    def watch(self, first_step: int, guidance: Guidance) -> AbstractContextManager[Callable[[], None]]:
        """Around the steps: gives what to call after each one. A subclass records attention here."""
        return nullcontext(lambda: None)
