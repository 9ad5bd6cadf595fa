"""Quantize: VQ latents to codebook indices and back, with codebook usage statistics."""
from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field
from safetensors.torch import save as tensors_to_bytes

from ..core.codes import code_usage, codebook_entries
from ..core.handles import CodeMap
from ..core.latents import latent_samples
from ..core.weights import read_safetensors
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs
from ..graph.safety import atomic_write, next_counter, output_prefix, ui_file
from ..graph.types import FloatSocket, IntSocket, Latent
from .io import check_prefix
from .sockets import Codes, VQModel


class QuantizeOutputs(NodeOutputs):
    latent: Latent = Field(description="quantized latent: the nearest codebook vector at every position, samples "
                           "[B, vq_embed_dim, h, w] float32 (other keys of the input kept)")
    codes: Codes = Field(description="codebook indices, int64 [B, h, w] in [0, num_codes)")
    codes_used: IntSocket = Field(description="number of distinct codes in the whole batch")
    perplexity: FloatSocket = Field(description="exp(entropy) of the code usage over the whole batch, in "
                                    "[1, codes_used]: the effective number of codes in use")


class QuantizeLatent(Node):
    """Snap a VQ latent to its nearest codebook vectors; also gives the code indices and how the codebook is used.

    The indices are diffusers' own (VQModel.quantize). The quantized latent holds the codebook vectors
    themselves, so it equals GenArt Dequantize Codes of the same indices bit for bit; diffusers'
    straight-through value z + (e - z) can differ from e in the last bit.
    """

    CLASS_TYPE = "GenArtQuantizeLatent"
    CATEGORY = "GenArt/quantize"

    Outputs = QuantizeOutputs

    vqmodel: VQModel = Field(description="the VQ autoencoder whose codebook is used")
    latent: Latent = Field(description="pre-quantization latent (GenArt Encode VQ), samples [B, vq_embed_dim, h, w]")

    def run(self, ctx: RunContext) -> QuantizeOutputs:
        handle = self.vqmodel
        z = latent_samples(self.latent)
        embed_dim = int(handle.model.quantize.vq_embed_dim)
        if z.shape[1] != embed_dim:
            raise ValueError(f"latent has {z.shape[1]} channels but this VQ model's codebook vectors have {embed_dim}; "
                             "encode with the same model (GenArt Encode VQ)")
        b, _, h, w = z.shape
        _, _, (_, _, indices) = handle.model.quantize(z.to(device=handle.device, dtype=handle.dtype))
        indices = indices.reshape(b, h, w).long()
        _, used, perplexity = code_usage(indices, handle.num_codes)
        return QuantizeOutputs(
            latent={**self.latent, "samples": codebook_entries(handle, indices).float()},
            codes=CodeMap(indices=indices, num_codes=handle.num_codes, embed_dim=embed_dim),
            codes_used=used, perplexity=perplexity)


class DequantizeCodes(Node):
    """Turn codebook indices back into a quantized latent (the codebook vector at every position)."""

    CLASS_TYPE = "GenArtDequantizeCodes"
    CATEGORY = "GenArt/quantize"

    class Outputs(NodeOutputs):
        latent: Latent = Field(description="quantized latent, samples [B, vq_embed_dim, h, w] float32 on the model's "
                               "device; decode it with GenArt Decode VQ")

    vqmodel: VQModel = Field(description="the VQ autoencoder whose codebook the indices refer to")
    codes: Codes = Field(description="codebook indices, int64 [B, h, w] in [0, num_codes) (GenArt Quantize Latent)")

    def run(self, ctx: RunContext) -> Outputs:
        handle, codes = self.vqmodel, self.codes
        embed_dim = int(handle.model.quantize.vq_embed_dim)
        if codes.num_codes != handle.num_codes or codes.embed_dim != embed_dim:
            raise ValueError(f"codes come from a codebook of {codes.num_codes} codes x {codes.embed_dim} channels but "
                             f"this VQ model has {handle.num_codes} x {embed_dim}; use the model that made the codes")
        indices = codes.indices
        if indices.ndim != 3 or indices.dtype != torch.int64:
            raise ValueError(f"codes.indices must be int64 [B, h, w], got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= handle.num_codes):
            raise ValueError(f"codes.indices hold values in [{int(indices.min())}, {int(indices.max())}] but this "
                             f"codebook has indices 0..{handle.num_codes - 1}; fix the edited codes")
        return self.Outputs(latent={"samples": codebook_entries(handle, indices).float()})


class FillCodes(Node):
    """Edit a code map: set every index in a rectangle (in latent cells) to one code."""

    CLASS_TYPE = "GenArtFillCodes"
    CATEGORY = "GenArt/quantize"

    class Outputs(NodeOutputs):
        codes: Codes = Field(description="the edited codebook indices, int64 [B, h, w]")

    codes: Codes = Field(description="codebook indices, int64 [B, h, w] (GenArt Quantize Latent)")
    code: int = Field(0, ge=0, le=1 << 20, description="the code index to write, in [0, num_codes)")
    x: int = Field(0, ge=0, le=4096, description="left edge of the rectangle, in latent cells")
    y: int = Field(0, ge=0, le=4096, description="top edge of the rectangle, in latent cells")
    width: int = Field(1, ge=1, le=4096, description="rectangle width in latent cells")
    height: int = Field(1, ge=1, le=4096, description="rectangle height in latent cells")

    def run(self, ctx: RunContext) -> Outputs:
        codes = self.codes
        _, h, w = codes.indices.shape
        if self.code >= codes.num_codes:
            raise ValueError(f"code {self.code} is not in this codebook of {codes.num_codes} codes "
                             f"(valid: 0..{codes.num_codes - 1})")
        if self.x + self.width > w or self.y + self.height > h:
            raise ValueError(f"rectangle x={self.x}, y={self.y}, {self.width}x{self.height} does not fit the "
                             f"{w}x{h} code map")
        indices = codes.indices.clone()
        indices[:, self.y:self.y + self.height, self.x:self.x + self.width] = self.code
        return self.Outputs(codes=CodeMap(indices=indices, num_codes=codes.num_codes, embed_dim=codes.embed_dim))


class SaveCodes(Node):
    """Save a code map as safetensors in the output folder (load it again with GenArt Load Codes)."""

    CLASS_TYPE = "GenArtSaveCodes"
    CATEGORY = "GenArt/quantize"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        pass

    codes: Codes = Field(description="codebook indices, int64 [B, h, w]")
    filename_prefix: str = Field("GenArt/codes", description="file name prefix inside the output folder; files are "
                                 "named <prefix>_<counter>_.safetensors")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        folder, stem = output_prefix(ctx.paths.output_dir, self.filename_prefix)
        path = folder / f"{stem}_{next_counter(folder, stem):05}_.safetensors"
        metadata = {"genart": "codes", "num_codes": str(self.codes.num_codes), "embed_dim": str(self.codes.embed_dim)}
        atomic_write(path, tensors_to_bytes({"indices": self.codes.indices.detach().cpu().contiguous()}, metadata))
        ctx.ui["codes"] = [ui_file(ctx.paths.output_dir, path)]
        return self.Outputs()


class LoadCodes(Node):
    """Load a code map saved by GenArt Save Codes from the input folder."""

    CLASS_TYPE = "GenArtLoadCodes"
    CATEGORY = "GenArt/quantize"

    class Outputs(NodeOutputs):
        codes: Codes = Field(description="codebook indices, int64 [B, h, w]")

    codes_file: Annotated[str, FileInput("input", (".safetensors",))] = Field(
        description="a .safetensors file written by GenArt Save Codes, inside the input folder")

    def run(self, ctx: RunContext) -> Outputs:
        path = ctx.paths.resolve_input("input", self.codes_file)
        tensors, metadata = read_safetensors(path)
        if metadata.get("genart") != "codes" or "indices" not in tensors:
            raise ValueError(f"{self.codes_file} is not a code map saved by GenArt Save Codes")
        indices = tensors["indices"]
        return self.Outputs(codes=CodeMap(indices=indices.long(), num_codes=int(metadata["num_codes"]),
                                          embed_dim=int(metadata["embed_dim"])))
