"""The denoising state machine: start or resume a denoising, run its steps, hand it over mid-way.

A denoising that is not finished travels inside its LATENT under the key "genart_denoise" (a
`DenoiseState`): the scheduler after the steps done so far (copied, never mutated once stored), the
index of the next step, the CPU random stream of the stochastic schedulers, and the exact scaled
latent. Whoever continues it copies what it needs and hands out a new state, so N single steps equal
one N-step run bit for bit (both run `Denoising.step`). Equal to diffusers' pipelines on the same
model, scheduler, steps, guidance and seed (tests/test_denoise.py).
"""
from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .handles import Conditioning, DenoiserHandle, SchedulerHandle
from .latents import batch_index_of, latent_samples
from .noise import prepare_noise_and_generator

STATE_KEY = "genart_denoise"


@dataclass(eq=False)
class DenoiseState:
    """An unfinished denoising, carried in LATENT["genart_denoise"]. Never mutated after it is stored.

    `x` is the latent the denoiser works on (samples * latent_scale) before step `index` of
    `scheduler.timesteps`; `samples` is the very tensor handed out as LATENT["samples"] (x / latent_scale),
    so a step that receives it unchanged resumes from `x` without a multiply/divide round-off.
    """

    scheduler_handle: SchedulerHandle
    scheduler: Any  # the diffusers scheduler after set_timesteps and `index` steps
    steps: int
    index: int
    generator_state: torch.Tensor  # torch.Generator("cpu").get_state()
    x: torch.Tensor
    samples: torch.Tensor
    latent_scale: float
    noise: torch.Tensor  # initial noise, denoiser space (inpainting re-noises the kept area with it)
    inpainting: Inpainting | None


@dataclass(eq=False)
class Inpainting:
    """A noise mask at the latent's size and the clean latent it keeps."""

    mask: torch.Tensor  # [B, C, h, w], 1 = denoise
    original: torch.Tensor  # the start latent, scaled (samples * latent_scale)


@dataclass(eq=False)
class Guidance:
    """Conditioning prepared once per node run: what the denoiser's cross-attention reads."""

    hidden_states: torch.Tensor | None  # [B, tokens, dim] or [2B, ...] (uncond then cond) when guided
    guided: bool
    cfg: float
    attention_mask: torch.Tensor | None = None  # [B or 2B, tokens], 1 = token, 0 = padding (masked encoders)

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """What the denoiser call takes besides the latent and timestep."""
        if self.hidden_states is None:
            return {}
        if self.attention_mask is None:
            return {"encoder_hidden_states": self.hidden_states}
        return {"encoder_hidden_states": self.hidden_states, "encoder_attention_mask": self.attention_mask}


_ACCEPTS_GENERATOR: dict[type, bool] = {}


def _accepts_generator(scheduler: Any) -> bool:
    cls = type(scheduler)
    if cls not in _ACCEPTS_GENERATOR:
        _ACCEPTS_GENERATOR[cls] = "generator" in inspect.signature(cls.step).parameters
    return _ACCEPTS_GENERATOR[cls]


class Denoising:
    """A denoising owned by one node run (mutable): a scheduler, the latent, the next step index."""

    def __init__(self, scheduler_handle: SchedulerHandle, scheduler: Any, steps: int, index: int, x: torch.Tensor,
                 generator: torch.Generator, latent_scale: float, noise: torch.Tensor,
                 inpainting: Inpainting | None) -> None:
        self.scheduler_handle = scheduler_handle
        self.scheduler = scheduler
        self.timesteps = scheduler.timesteps
        self.steps = steps
        self.index = index
        self.x = x
        self.generator = generator
        self.latent_scale = latent_scale
        self.noise = noise
        self.inpainting = inpainting
        self._step_kwargs: dict[str, Any] = {"generator": generator} if _accepts_generator(scheduler) else {}

    @property
    def total(self) -> int:
        """Entries of the schedule (one denoiser evaluation each)."""
        return len(self.timesteps)

    @property
    def finished(self) -> bool:
        return self.index >= self.total

    def step(self, model: Any, guidance: Guidance) -> None:
        """Run step `index`: one denoiser evaluation (two batched under guidance) and one scheduler step."""
        t = self.timesteps[self.index]
        x, inpainting = self.x, self.inpainting
        if inpainting is not None:  # the kept area is the original, noised to this step
            kept = self.scheduler.add_noise(inpainting.original, self.noise, t.reshape(1))
            x = inpainting.mask * x + (1 - inpainting.mask) * kept
        model_in = self.scheduler.scale_model_input(x, t)
        if guidance.guided:
            model_in = torch.cat([model_in] * 2)
        out = model(model_in, t, **guidance.model_kwargs(), return_dict=False)[0]
        if guidance.guided:
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + guidance.cfg * (out_cond - out_uncond)
        x = self.scheduler.step(out, t, x, **self._step_kwargs, return_dict=False)[0]
        self.index += 1
        if inpainting is not None and self.finished:
            x = inpainting.mask * x + (1 - inpainting.mask) * inpainting.original
        self.x = x

    def run(self, model: Any, guidance: Guidance, end: int, snapshot_every: int = 0,
            on_step: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Run the steps before `end`; the unscaled latent after every `snapshot_every`-th step run and after the
        last one (none when 0)."""
        count = end - self.index
        snapshots = []
        for done in range(1, count + 1):
            self.step(model, guidance)
            if on_step is not None:
                on_step()
            if snapshot_every and (done % snapshot_every == 0 or done == count):
                snapshots.append(self.samples())
        return snapshots

    def samples(self) -> torch.Tensor:
        """The current latent unscaled (LATENT["samples"]): x / latent_scale."""
        return self.x / self.latent_scale

    def output(self, latent: dict, samples: torch.Tensor) -> dict:
        """The LATENT to hand out: `latent`'s other keys (noise_mask, batch_index) kept, new samples, and the
        state while steps remain. Hands over the scheduler: this object must not step any more."""
        out = {k: v for k, v in latent.items() if k != STATE_KEY}
        out["samples"] = samples
        if not self.finished:
            out[STATE_KEY] = DenoiseState(
                scheduler_handle=self.scheduler_handle,
                scheduler=self.scheduler, steps=self.steps, index=self.index,
                generator_state=self.generator.get_state(), x=self.x, samples=samples,
                latent_scale=self.latent_scale, noise=self.noise, inpainting=self.inpainting)
        return out


def denoiser_input(latent: Any, denoiser: DenoiserHandle) -> torch.Tensor:
    """LATENT["samples"] of input 'latent', checked against what the denoiser takes."""
    samples = latent_samples(latent, "latent")
    channels = denoiser.model.config.in_channels
    if samples.shape[1] != channels:
        raise ValueError(
            f"input 'latent' has {samples.shape[1]} channels (shape {tuple(samples.shape)}) but the denoiser "
            f"takes {channels}; encode with the autoencoder the denoiser was trained with")
    return samples


def _batch(embeddings: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if embeddings.shape[0] == batch:
        return embeddings
    if embeddings.shape[0] == 1:  # as StableDiffusionPipeline repeats per image
        return embeddings.repeat(batch, *[1] * (embeddings.ndim - 1))
    raise ValueError(
        f"input 'conditioning' holds {embeddings.shape[0]} {what} embeddings for a latent batch of {batch}; "
        "give one prompt (used for every item) or one per item")


def prepare_guidance(denoiser: DenoiserHandle, conditioning: Conditioning | None, cfg: float,
                     batch: int) -> Guidance:
    """Check conditioning against the denoiser and stack it for one batched call per step."""
    config = denoiser.model.config
    if not denoiser.conditional:
        if conditioning is not None:
            raise ValueError(
                f"input 'conditioning' is connected but the denoiser ({type(denoiser.model).__name__}) is "
                "unconditional and reads no text; disconnect it or load a conditional denoiser")
        return Guidance(None, False, cfg)
    if conditioning is None:
        raise ValueError(
            f"input 'conditioning' is missing: the denoiser ({type(denoiser.model).__name__}, cross_attention_dim "
            f"{config.cross_attention_dim}) is conditional; connect GenArt Encode Text")
    dim = conditioning.cond.shape[-1]
    if conditioning.cond.ndim != 3 or dim != config.cross_attention_dim:
        raise ValueError(
            f"input 'conditioning' has embeddings of shape {tuple(conditioning.cond.shape)} but the denoiser's "
            f"cross_attention_dim is {config.cross_attention_dim}; use the text encoder it was trained with")
    device, dtype = denoiser.device, denoiser.dtype
    cond = _batch(conditioning.cond.to(device=device, dtype=dtype), batch, "prompt")
    cond_mask = _mask(conditioning.cond_mask, conditioning.cond, batch, device, "prompt")
    if cfg == 1.0:
        return Guidance(cond, False, cfg, cond_mask)
    if conditioning.uncond is None:
        raise ValueError(
            f"input 'cfg' = {cfg} needs negative-prompt embeddings, but 'conditioning' has none; set cfg to 1.0 "
            "or make the conditioning with GenArt Encode Text (it always encodes the negative prompt)")
    uncond = _batch(conditioning.uncond.to(device=device, dtype=dtype), batch, "negative-prompt")
    uncond_mask = _mask(conditioning.uncond_mask, conditioning.uncond, batch, device, "negative-prompt")
    if cond.shape[1] != uncond.shape[1]:
        raise ValueError(f"input 'conditioning' has prompt embeddings of {cond.shape[1]} tokens and negative-prompt "
                         f"embeddings of {uncond.shape[1]}; encode both with the same text encoder")
    mask = None
    if cond_mask is not None or uncond_mask is not None:
        mask = torch.cat([uncond_mask if uncond_mask is not None else torch.ones_like(cond_mask),
                          cond_mask if cond_mask is not None else torch.ones_like(uncond_mask)])
    return Guidance(torch.cat([uncond, cond]), True, cfg, mask)


def _mask(mask: torch.Tensor | None, embeddings: torch.Tensor, batch: int, device: torch.device, what: str
          ) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.shape != embeddings.shape[:2]:
        raise ValueError(f"input 'conditioning' has a {what} attention mask of shape {tuple(mask.shape)} for "
                         f"embeddings of shape {tuple(embeddings.shape)}; re-encode it with GenArt Encode Text")
    return _batch(mask.to(device), batch, f"{what} mask")


def _latent_mask(noise_mask: Any, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ComfyUI's prepare_mask: bilinear resize to the latent, repeated over channels (and a batch of 1)."""
    if not isinstance(noise_mask, torch.Tensor) or noise_mask.ndim not in (2, 3, 4):
        got = f"shape {tuple(noise_mask.shape)}" if isinstance(noise_mask, torch.Tensor) else type(noise_mask).__name__
        raise ValueError(f"input 'latent' has a noise_mask that is not a MASK [B, H, W]: {got}; set it with "
                         "GenArt Set Noise Mask")
    mask = noise_mask.reshape(-1, 1, noise_mask.shape[-2], noise_mask.shape[-1]).to(device=device, dtype=dtype)
    if mask.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"input 'latent' has a noise_mask for {mask.shape[0]} images but {shape[0]} latents; give one mask "
            "for all or one per latent")
    mask = F.interpolate(mask, size=(shape[2], shape[3]), mode="bilinear")
    return mask.repeat(shape[0] // mask.shape[0], shape[1], 1, 1)


def check_prediction_type(denoiser: DenoiserHandle, handle: SchedulerHandle) -> None:
    """Refuse a scheduler that reads the UNet's output as something the UNet was not trained to predict."""
    expected = denoiser.prediction_type
    given = handle.config.get("prediction_type", "epsilon")
    if expected is not None and given != expected:
        raise ValueError(f"input 'scheduler' has prediction_type {given!r} but the denoiser {denoiser.source!r} "
                         f"was trained to predict {expected!r} (as its folder records); set the scheduler's "
                         f"prediction_type to {expected!r}")


def _same_scheduler(a: SchedulerHandle, b: SchedulerHandle) -> bool:
    return a is b or (a.class_name == b.class_name and a.config == b.config)


def no_step_message(steps: int, strength: float) -> str | None:
    """Why `strength` runs no step of a `steps`-step schedule (diffusers' int(steps * strength)), or None."""
    if int(steps * strength) > 0:
        return None
    least = 0.01 * math.ceil(100 / steps)
    while int(steps * least) == 0:
        least += 0.01
    return (f"denoise {strength} with steps={steps} runs int({steps} * {strength}) = 0 steps; raise denoise to at "
            f"least {least:.2f} or raise steps")


def strength_start(steps: int, strength: float, order: int) -> int:
    """diffusers' img2img convention: the index where the last int(steps * strength) steps begin."""
    problem = no_step_message(steps, strength)
    if problem is not None:
        raise ValueError(f"input 'denoise': {problem}")
    return (steps - min(int(steps * strength), steps)) * order


def begin_denoising(denoiser: DenoiserHandle, scheduler: SchedulerHandle, latent: dict, *, seed: int, steps: int,
                    start: int, add_noise: bool, noise: dict | None, start_input: str,
                    strength: float = 1.0, from_latent: bool = False) -> Denoising:
    """Resume the denoising `latent` carries, or start one at step `start` of a `steps`-step schedule.

    `strength` < 1 starts instead where diffusers' img2img would (see `strength_start`); `start_input`
    names the input that gave `start`, for messages. `from_latent`: noise the latent to the start step even
    at step 0 (img2img at full strength keeps a trace of it) instead of starting from pure noise.
    """
    samples = denoiser_input(latent, denoiser)
    state = latent.get(STATE_KEY)
    if isinstance(state, DenoiseState):
        if strength < 1.0:
            start, start_input = strength_start(steps, strength, state.scheduler.order), "denoise"
        return _resume(state, denoiser, scheduler, samples, steps, start, start_input)
    return _start(denoiser, scheduler, latent, samples, seed, steps, start, strength, add_noise, noise, start_input,
                  from_latent)


def _resume(state: DenoiseState, denoiser: DenoiserHandle, scheduler: SchedulerHandle, samples: torch.Tensor,
            steps: int, start: int, start_input: str) -> Denoising:
    where = f"the latent is mid-denoising at step {state.index} of a {state.steps}-step schedule"
    if start != state.index:
        raise ValueError(f"input {start_input!r} = {start} but {where}; set {start_input} to {state.index} to "
                         "continue it")
    if steps != state.steps:
        raise ValueError(f"input 'steps' = {steps} but {where}; use steps={state.steps} in every node of a chain")
    if not _same_scheduler(scheduler, state.scheduler_handle):
        raise ValueError(
            f"input 'scheduler' is {scheduler.class_name} {scheduler.config} but {where} with "
            f"{state.scheduler_handle.class_name} {state.scheduler_handle.config}; connect the same scheduler")
    if samples.shape != state.x.shape:
        raise ValueError(f"input 'latent' has shape {tuple(samples.shape)} but {where} with shape "
                         f"{tuple(state.x.shape)}; the latent may not change shape while it is denoised")
    scale = float(denoiser.latent_scale)
    if samples is state.samples and scale == state.latent_scale:
        x = state.x
    else:  # changed between steps (or a denoiser with another scale): take what was given
        x = samples.to(device=state.x.device, dtype=state.x.dtype) * scale
    generator = torch.Generator(device="cpu")
    generator.set_state(state.generator_state)
    return Denoising(state.scheduler_handle, copy.deepcopy(state.scheduler), state.steps, state.index, x,
                     generator, scale, state.noise, state.inpainting)


def _start(denoiser: DenoiserHandle, handle: SchedulerHandle, latent: dict, samples: torch.Tensor, seed: int,
           steps: int, start: int, strength: float, add_noise: bool, noise: dict | None,
           start_input: str, from_latent: bool) -> Denoising:
    device, dtype = denoiser.device, denoiser.dtype
    check_prediction_type(denoiser, handle)
    scheduler = handle.fresh()
    try:
        scheduler.set_timesteps(steps, device=device)
    except ValueError as err:
        raise ValueError(f"input 'steps' = {steps}: {handle.class_name} cannot make that schedule ({err}); "
                         "lower steps") from err
    timesteps = scheduler.timesteps
    if strength < 1.0:
        start, start_input = strength_start(steps, strength, scheduler.order), "denoise"
    if start >= len(timesteps):
        raise ValueError(
            f"input {start_input!r} = {start} is past the last step: {handle.class_name} with steps={steps} has "
            f"{len(timesteps)} steps (0 to {len(timesteps) - 1})")
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)  # as diffusers' img2img pipelines do; add_noise reads it
    drawn, generator = prepare_noise_and_generator(samples.shape, seed, batch_index_of(latent, samples.shape[0]))
    if noise is None:
        eps = drawn.to(device=device, dtype=dtype)
    else:
        given = latent_samples(noise, "noise")
        if given.shape != samples.shape:
            raise ValueError(f"input 'noise' has shape {tuple(given.shape)} but 'latent' has {tuple(samples.shape)}; "
                             "make the noise from this latent (GenArt Noise) or leave 'noise' unlinked")
        eps = given.to(device=device, dtype=dtype)
    scale = float(denoiser.latent_scale)
    inpainting = None
    if latent.get("noise_mask") is not None:
        inpainting = Inpainting(_latent_mask(latent["noise_mask"], samples.shape, device, dtype),
                                samples.to(device=device, dtype=dtype) * scale)
    if add_noise and start == 0 and not from_latent:
        x = eps * scheduler.init_noise_sigma
    else:
        x = inpainting.original if inpainting is not None else samples.to(device=device, dtype=dtype) * scale
        if add_noise:
            x = scheduler.add_noise(x, eps, timesteps[start:start + 1].repeat(samples.shape[0]))
    return Denoising(handle, scheduler, steps, start, x, generator, scale, eps, inpainting)


def injection_step(handle: SchedulerHandle, steps: int, by: str, level: float) -> tuple[int, int, int]:
    """(start step, schedule length, timestep) where img2img noise goes on a `steps`-step schedule.

    by 'strength': level is the fraction of the steps left to run (diffusers' int(steps * strength));
    by 'timestep': level is a training timestep and the first step at or below it is taken. A start equal to
    the schedule length means no step is left (nothing to noise); its timestep is then -1.
    """
    schedule = handle.fresh()
    if not hasattr(schedule, "add_noise"):
        raise ValueError(f"scheduler {handle.class_name} has no add_noise; use a scheduler such as "
                         "DDIMScheduler, DDPMScheduler or EulerDiscreteScheduler")
    schedule.set_timesteps(steps)
    timesteps, order = schedule.timesteps, schedule.order
    if by == "strength":
        start = (steps - min(int(steps * level), steps)) * order
    else:
        limit = int(schedule.config.num_train_timesteps)
        if level >= limit:
            raise ValueError(f"timestep {int(level)} is outside this scheduler's training schedule "
                             f"[0, {limit}); use a value below {limit}")
        at_or_below = (i for i in range(0, len(timesteps), order) if timesteps[i] <= level)
        start = next(at_or_below, len(timesteps))
    t = int(timesteps[start]) if start < len(timesteps) else -1
    return start, len(timesteps), t
