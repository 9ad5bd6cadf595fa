"""Attention made visible: sample while recording the denoiser's attention, then draw it over the image."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import torch
from pydantic import Field

from ..core.attention_maps import AttentionCapture, overlay, self_attention_heatmaps, token_heatmaps, upsampled
from ..core.denoising import Guidance
from ..core.plots import labeled_grid
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_STEPS
from ..graph.types import Image, Mask, StringSocket, check_image
from .sample import SampleLatent
from .sockets import Attention

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "<|startoftext|>", "<|endoftext|>", "<s>", "</s>")


def parse_points(text: str) -> tuple[tuple[float, float], ...]:
    """'x,y; x,y' with x, y fractions of the width and height in [0, 1]."""
    points = []
    for part in text.replace("\n", ";").split(";"):
        if not part.strip():
            continue
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise ValueError(f"input 'query_points': {part.strip()!r} is not 'x,y' (two numbers in [0, 1] "
                             "separated by a comma; points separated by ';')") from None
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"input 'query_points': {part.strip()!r} lies outside [0, 1] x [0, 1]")
        points.append((x, y))
    if len(points) > 16:
        raise ValueError(f"input 'query_points' gives {len(points)} points; at most 16")
    return tuple(points)


class SampleLatentAttention(SampleLatent):
    """GenArt Sample Latent that also records the denoiser's attention (the sample is bit-identical).

    Cross-attention: how much each image position attends to each prompt token, per layer and step;
    self-attention: what the chosen query points attend to. Under guidance only the prompt half is kept.
    """

    CLASS_TYPE = "GenArtSampleLatentAttention"
    CATEGORY = "GenArt/visualize"
    DISPLAY_NAME = "GenArt Sample Latent + Attention"
    PERSIST_OUTPUTS = False  # the record is not a tensor file

    class Outputs(SampleLatent.Outputs):
        attention: Attention = Field(
            description="the recorded attention: per-layer and per-step cross-attention maps over the prompt's "
                        "tokens, self-attention rows of the query points (GenArt Attention Heatmaps draws them)")

    record_from_step: int = Field(0, ge=0, le=MAX_STEPS, description="first step whose attention is recorded "
                                  "(0 = the noisiest)")
    record_to_step: int = Field(-1, ge=-1, le=MAX_STEPS, description="stop recording before this step (-1: to "
                                "the end); early steps decide the layout, late ones the details")
    query_points: str = Field("0.5,0.5", description="self-attention query positions 'x,y; x,y' as fractions of "
                              "width and height (0,0 top left); empty records no self-attention")

    def run(self, ctx: RunContext) -> Outputs:
        points = parse_points(self.query_points)
        self._capture: AttentionCapture | None = None
        self._points = points
        base = SampleLatent.run(self, ctx)
        assert self._capture is not None
        return self.Outputs(latent=base.latent, trajectory=base.trajectory, attention=self._capture.result())

    def watch(self, first_step: int, guidance: Guidance) -> AbstractContextManager[Callable[[], None]]:
        tokens = self.conditioning.tokens if self.conditioning is not None else ()
        capture = AttentionCapture(self.denoiser.model, self.record_from_step, self.record_to_step, self._points,
                                   tokens, guidance.guided)
        capture.step = first_step
        self._capture = capture

        @contextmanager
        def recording() -> Iterator[Callable[[], None]]:
            with capture:
                yield capture.advance

        return recording()


class AttentionHeatmaps(Node):
    """Draw recorded attention over the decoded image: one heatmap per prompt token (DAAM: cross-attention of
    every layer and recorded step, upsampled and summed), or per self-attention query point."""

    CLASS_TYPE = "GenArtAttentionHeatmaps"
    CATEGORY = "GenArt/visualize"

    class Outputs(NodeOutputs):
        heatmaps: Image = Field(description="per item: one overlay per token (or query point), [B * N, H, W, 3]")
        maps: Mask = Field(description="the maps themselves, [B * N, H, W] in [0, 1] (1 = most attended)")
        grid: Image = Field(description="one row per item: the image, then each overlay, labelled with its token")
        labels: StringSocket = Field(description="the token (or point) of each map, one per line")

    attention: Attention = Field(description="from GenArt Sample Latent + Attention")
    image: Image = Field(description="the decoded sample(s), [B, H, W, 3]: the maps are drawn at its size")
    kind: Literal["tokens", "self-attention"] = Field(
        "tokens", description="cross-attention per prompt token, or self-attention of the query points")
    special_tokens: bool = Field(False, description="also draw the tokenizer's own tokens ([CLS], [SEP], "
                                 "<|startoftext|> ...), which often soak up attention")
    alpha: float = Field(0.6, ge=0.0, le=1.0, description="weight of the coloured map over the greyed image")
    cell_size: int = Field(96, ge=16, le=512, description="pixels of each cell of the labelled grid")

    def run(self, ctx: RunContext) -> Outputs:
        image = check_image(self.image, "image").float().cpu()
        record, size = self.attention, (image.shape[1], image.shape[2])
        if self.kind == "tokens":
            maps = token_heatmaps(record, size)
            labels = list(record.tokens) or [f"token {i}" for i in range(maps.shape[1])]
            keep = [i for i, t in enumerate(labels) if i < maps.shape[1]
                    and (self.special_tokens or t not in SPECIAL_TOKENS)]
        else:
            maps = self_attention_heatmaps(record, size)
            labels = [f"({x:g}, {y:g})" for x, y in record.points]
            keep = list(range(maps.shape[1]))
        if maps.shape[0] != image.shape[0]:
            raise ValueError(f"input 'image' holds {image.shape[0]} images but the attention was recorded for a "
                             f"batch of {maps.shape[0]}; decode the latent of the same sampler")
        if not keep:
            raise ValueError("no token left to draw: the prompt has only special tokens; set special_tokens on")
        maps = maps[:, keep]
        names = [labels[i] for i in keep]
        overlays = torch.stack([torch.stack([overlay(image[b], maps[b, n], self.alpha) for n in range(len(keep))])
                                for b in range(image.shape[0])])
        cells = torch.cat([image[:, None, ..., :3], overlays], dim=1)  # [B, 1 + N, H, W, 3]
        grid = labeled_grid(cells.flatten(0, 1), len(keep) + 1, (["image", *names]) * image.shape[0],
                            self.cell_size)
        return self.Outputs(heatmaps=overlays.flatten(0, 1), maps=maps.flatten(0, 1), grid=grid,
                            labels="\n".join(names))


class AttentionGrid(Node):
    """One token's cross-attention per layer (rows) and recorded step (columns), before any aggregation:
    where in the network and when in the denoising the token is read."""

    CLASS_TYPE = "GenArtAttentionGrid"
    CATEGORY = "GenArt/visualize"

    class Outputs(NodeOutputs):
        grid: Image = Field(description="rows = layers (down, mid, up), columns = steps; each map scaled to its own "
                            "maximum, labelled with its step and attention share")

    attention: Attention = Field(description="from GenArt Sample Latent + Attention")
    token: str = Field("", description="the token to show (as the heatmaps label it, e.g. 'heart'); empty = the "
                       "first that is not a special token")
    item: int = Field(0, ge=0, le=255, description="which item of the batch")
    max_steps: int = Field(10, ge=1, le=MAX_STEPS, description="at most this many columns, evenly spread over the "
                           "recorded steps")
    cell_size: int = Field(64, ge=16, le=512, description="pixels of each cell")

    def run(self, ctx: RunContext) -> Outputs:
        record = self.attention
        if not record.cross_steps:
            raise ValueError("no cross-attention was recorded: the denoiser reads no text, or no step was in the "
                             "recorded range")
        tokens = list(record.tokens)
        if self.token:
            if self.token not in tokens:
                raise ValueError(f"input 'token': {self.token!r} is not a token of the prompt; its tokens: "
                                 f"{', '.join(tokens)}")
            index = tokens.index(self.token)
        else:
            index = next((i for i, t in enumerate(tokens) if t not in SPECIAL_TOKENS), 0)
        steps = record.steps
        if len(steps) > self.max_steps:
            steps = [steps[round(i * (len(steps) - 1) / (self.max_steps - 1))] for i in range(self.max_steps)] \
                if self.max_steps > 1 else steps[:1]
        cells, labels = [], []
        for layer in record.layers:
            for step in steps:
                maps = record.cross_steps[(layer, step)]
                if self.item >= maps.shape[0]:
                    raise ValueError(f"input 'item' = {self.item} but the batch has {maps.shape[0]} items")
                one = upsampled(maps[self.item:self.item + 1], (self.cell_size, self.cell_size))[0, index]
                share = float(maps[self.item, ..., index].mean())
                cells.append(overlay(torch.zeros(self.cell_size, self.cell_size, 3),
                                     one / one.max().clamp_min(1e-12), 1.0))
                labels.append(f"t{step} {share:.0%}")
        rows = [short_layer(n) for n in record.layers]
        grid = labeled_grid(torch.stack(cells), len(steps), labels, self.cell_size, row_labels=rows)
        return self.Outputs(grid=grid)


def short_layer(name: str) -> str:
    """'down_blocks.1.attentions.0.transformer_blocks.0.attn2' -> 'down1.0'."""
    parts = name.split(".")
    block = parts[0].replace("_blocks", "").replace("_block", "")
    if block == "mid":
        return f"mid.{parts[2]}" if len(parts) > 2 else "mid"
    return f"{block}{parts[1]}.{parts[3]}" if len(parts) > 3 else block
