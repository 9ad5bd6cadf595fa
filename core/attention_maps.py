"""What a denoiser's attention looks at, recorded while it samples, without changing what it samples.

`AttentionCapture` wraps every attention processor of a diffusers UNet (the shipped text model, SD 1.x) in
a recorder that first calls the original processor, so the sample is bit-identical, then recomputes the
attention probabilities from the same projections (diffusers' `Attention.get_attention_scores`: the same
scale, mask and softmax). It keeps, for the steps in [from_step, to_step):
- cross-attention: the probability each image position gives each prompt token, averaged over heads, per
  layer and step (rows sum to 1 over the tokens);
- self-attention: the rows of chosen query positions (fractions of the width and height), so one can see
  which parts of the image a position reads.
Under classifier-free guidance only the prompt half of the batch is kept. Maps are aggregated as DAAM
(Tang et al. 2023): each layer's map upsampled to the image size, summed over layers and steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

# Per-(layer, step) maps are kept at most this size (the per-layer/per-step grid); the per-layer sums that the
# heatmaps use stay at the layer's own resolution.
GRID_MAP_SIZE = 16


@dataclass(eq=False)
class AttentionRecord:
    """Attention recorded during one sampling run. Socket GENART_ATTENTION.

    cross[layer]: [B, h, w, T] cross-attention probabilities summed over the recorded steps;
    cross_steps[(layer, step)]: [B, h', w', T] of each step (h', w' <= GRID_MAP_SIZE);
    self_rows[layer]: [B, P, h, w] self-attention of the P query points, summed over steps.
    """

    tokens: tuple[str, ...] = ()
    points: tuple[tuple[float, float], ...] = ()
    steps: list[int] = field(default_factory=list)
    cross: dict[str, torch.Tensor] = field(default_factory=dict)
    cross_steps: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    self_rows: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.cross)


class _Recorder:
    """An attention processor that runs the original one and records the probabilities beside it."""

    def __init__(self, inner: Any, name: str, capture: AttentionCapture) -> None:
        self.inner, self.name, self.capture = inner, name, capture

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if self.capture.active and hidden_states.ndim == 3:
            with torch.no_grad():
                self.capture.store(self.name, attn, hidden_states, encoder_hidden_states, attention_mask)
        return out


class AttentionCapture:
    """Install recorders on `unet` for the duration of a `with` block; `step` is the step being run (the
    sampler's callback advances it), `guided` says whether the batch is [uncond, cond]."""

    def __init__(self, unet: Any, from_step: int = 0, to_step: int = -1, points: tuple[tuple[float, float], ...] = (),
                 tokens: tuple[str, ...] = (), guided: bool = False) -> None:
        self.unet, self.from_step, self.to_step, self.guided = unet, from_step, to_step, guided
        self.recorded = AttentionRecord(tokens=tokens, points=points)
        self.step = 0
        self._saved: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.step >= self.from_step and (self.to_step < 0 or self.step < self.to_step)

    def __enter__(self) -> AttentionCapture:
        self._saved = dict(self.unet.attn_processors)
        if not self._saved:
            raise ValueError(f"{type(self.unet).__name__} has no attention layers to record")
        self.unet.set_attn_processor({name: _Recorder(p, name, self) for name, p in self._saved.items()})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self.unet.set_attn_processor(self._saved)
            self._saved = None

    def advance(self) -> None:
        """The sampler finished a step."""
        self.step += 1

    def store(self, name: str, attn: Any, hidden: torch.Tensor, context: torch.Tensor | None,
                       mask: torch.Tensor | None) -> None:
        cross = context is not None
        if not cross and not self.recorded.points:
            return
        batch, queries = hidden.shape[0], hidden.shape[1]
        source = context if cross else hidden
        if cross and attn.norm_cross:
            source = attn.norm_encoder_hidden_states(source)
        side = math.isqrt(queries)
        if side * side != queries:
            return  # not a square feature map (a non-square image): its maps are skipped
        query = attn.to_q(hidden)
        if not cross:  # only the rows of the chosen points
            rows = torch.tensor([_point_index(p, side) for p in self.recorded.points], device=hidden.device)
            query = query[:, rows]
        key = attn.to_k(source)
        q, k = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key)
        bias = attn.prepare_attention_mask(mask, key.shape[1], batch) if mask is not None else None
        probs = attn.get_attention_scores(q, k, bias).float()  # [B * heads, rows, keys]
        probs = probs.view(batch, attn.heads, *probs.shape[1:]).mean(1)
        if self.guided:
            probs = probs[batch // 2:]
        kept = probs.shape[0]
        layer = name.removesuffix(".processor")
        if cross:
            maps = probs.view(kept, side, side, -1).cpu()
            _accumulate(self.recorded.cross, layer, maps)
            small = maps
            if side > GRID_MAP_SIZE:
                small = F.adaptive_avg_pool2d(maps.permute(0, 3, 1, 2), GRID_MAP_SIZE).permute(0, 2, 3, 1)
            self.recorded.cross_steps[(layer, self.step)] = small
            if self.step not in self.recorded.steps:
                self.recorded.steps.append(self.step)
        else:
            _accumulate(self.recorded.self_rows, layer, probs.view(kept, -1, side, side).cpu())

    def result(self) -> AttentionRecord:
        return self.recorded


def _point_index(point: tuple[float, float], side: int) -> int:
    x, y = point
    return min(side - 1, int(y * side)) * side + min(side - 1, int(x * side))


def _accumulate(store: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    store[key] = value if key not in store else store[key] + value


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, h, w, T] -> [B, T, H, W] bilinear."""
    return F.interpolate(maps.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False)


def token_heatmaps(record: AttentionRecord, size: tuple[int, int], layers: list[str] | None = None) -> torch.Tensor:
    """DAAM maps [B, T, H, W]: every chosen layer's cross-attention (summed over the recorded steps) upsampled
    to `size` and summed; each token's map divided by its maximum, so 1 is where it is attended most."""
    chosen = [n for n in (layers or record.layers) if n in record.cross]
    if not chosen:
        raise ValueError("no cross-attention was recorded: the denoiser reads no text, or no step was in the "
                         "recorded range")
    total = sum(upsampled(record.cross[n], size) for n in chosen)
    assert isinstance(total, torch.Tensor)
    return total / total.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]


def self_attention_heatmaps(record: AttentionRecord, size: tuple[int, int]) -> torch.Tensor:
    """[B, P, H, W]: what each query point reads, summed over layers and steps, scaled to max 1."""
    if not record.self_rows:
        raise ValueError("no self-attention was recorded: give query points, and a denoiser with attention")
    total = sum(F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
                for m in record.self_rows.values())
    assert isinstance(total, torch.Tensor)
    return total / total.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]


def colorize(values: torch.Tensor) -> torch.Tensor:
    """[..., H, W] in [0, 1] -> [..., H, W, 3]: a perceptual dark-blue-to-yellow ramp (viridis-like
    endpoints), so high attention reads bright in colour and in greyscale."""
    stops = torch.tensor([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
                          [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])
    x = values.clamp(0, 1) * (len(stops) - 1)
    low = x.floor().long().clamp(max=len(stops) - 2)
    frac = (x - low)[..., None]
    return stops[low] * (1 - frac) + stops[low + 1] * frac


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float) -> torch.Tensor:
    """IMAGE [H, W, 3] blended with heat [H, W] in [0, 1] coloured: alpha * colour + (1 - alpha) * grey image."""
    grey = image.mean(-1, keepdim=True).expand_as(image)
    return (alpha * colorize(heat) + (1 - alpha) * grey).clamp(0, 1)
