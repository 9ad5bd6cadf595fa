"""GAN sampling: images from seeds (truncation, per-block noise strength, distribution and seed of the injected
noise) and latent interpolation between two seeds. The generator comes from GenArt Load GAN or GenArt Train GAN."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from ..core.gan_models import NoiseKind
from ..core.gan_sampling import NoiseSettings, block_strengths, generate, interpolate, parse_block_strengths
from ..core.noise import SEED_MAX
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_BATCH
from ..graph.types import Image, nchw_to_image
from .sockets import GAN

GAN_HELP = "the GAN generator (GenArt Load GAN, GenArt Train GAN)"
PSI_HELP = ("truncation psi: pulls w toward the generator's mean w; 1 = none, < 1 = typical, cleaner and less "
            "varied images, 0 = every seed gives the mean image")
STRENGTH_HELP = ("global factor on the learned per-channel noise strengths of every block (1 = as trained, 0 = no "
                 "noise: the image then does not depend on noise_seed)")
BLOCKS_HELP = ("per-block factors multiplying noise_strength, one per generator block from 4x4 up, separated by "
               "commas: '1, 0, 0, 0' = noise in the 4x4 block only. Empty = 1 on every block")
KIND_HELP = ("distribution of the injected noise maps, all zero mean and unit variance: gaussian (as trained), "
             "uniform, laplace; none = no noise drawn (the same image as strength 0)")
NOISE_SEED_HELP = ("seed of the layer noise, separate from the seed of z: change it to redraw only the noise of the "
                   "same z. Item i's noise is the i-th item's draw of one CPU stream, whatever the batch size")


def block_strength_problems(constants: dict[str, Any]) -> list[tuple[str, str]]:
    text = constants.get("block_strengths", "")
    if isinstance(text, str):
        try:
            parse_block_strengths(text)
        except ValueError as err:
            return [("block_strengths", str(err))]
    return []


def _noise(node: Any) -> NoiseSettings:
    strengths = block_strengths(node.noise_strength, node.block_strengths, node.gan.model.num_blocks)
    return NoiseSettings(strengths, node.noise_kind, node.noise_seed, node.truncation_psi)


class GenerateGAN(Node):
    """Generate images with a GAN: seed -> z -> image, with truncation and per-block control of the injected noise."""

    CLASS_TYPE = "GenArtGenerateGAN"
    CATEGORY = "GenArt/gan"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the images, [batch_size, H, W, 3] float32 in [0, 1] (clamped)")

    gan: GAN = Field(description=GAN_HELP)
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of z: item i's z is the i-th [1, z_dim] draw of one "
                      "CPU stream, so an item's z does not depend on batch_size")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="images to generate (items 0 .. batch_size-1)")
    truncation_psi: float = Field(1.0, ge=0.0, le=2.0, description=PSI_HELP)
    noise_strength: float = Field(1.0, ge=0.0, le=100.0, description=STRENGTH_HELP)
    block_strengths: str = Field("", description=BLOCKS_HELP)
    noise_kind: NoiseKind = Field("gaussian", description=KIND_HELP)
    noise_seed: int = Field(0, ge=0, le=SEED_MAX, description=NOISE_SEED_HELP)
    same_z: bool = Field(False, description="every image takes item 0's z (of seed) and its own layer noise (items "
                         "0 .. batch_size-1 of noise_seed): the batch shows only what the noise changes")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return block_strength_problems(constants)

    def run(self, ctx: RunContext) -> Outputs:
        images = generate(self.gan.model, self.seed, self.batch_size, _noise(self), self.same_z)
        return self.Outputs(image=nchw_to_image(images))


class InterpolateGAN(Node):
    """Walk a GAN's latent space from one seed's z to another's in N frames (slerp), the same layer noise in each.

    The frames form an IMAGE batch for a grid or an animation; the ends equal Generate GAN's images."""

    CLASS_TYPE = "GenArtInterpolateGAN"
    CATEGORY = "GenArt/gan"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the frames, [frames, H, W, 3] float32 in [0, 1] (clamped); the first and "
                             "the last equal Generate GAN's image for seed_a and seed_b (batch item 0)")

    gan: GAN = Field(description=GAN_HELP)
    seed_a: int = Field(0, ge=0, le=SEED_MAX, description="seed of the first frame's z (item 0 of that seed)")
    seed_b: int = Field(1, ge=0, le=SEED_MAX, description="seed of the last frame's z (item 0 of that seed)")
    frames: int = Field(8, ge=2, le=MAX_BATCH, description="frames, both ends included, at evenly spaced t")
    slerp: bool = Field(True, description="spherical interpolation (keeps z at the norm the generator was trained "
                        "on); off = linear")
    truncation_psi: float = Field(1.0, ge=0.0, le=2.0, description=PSI_HELP)
    noise_strength: float = Field(1.0, ge=0.0, le=100.0, description=STRENGTH_HELP)
    block_strengths: str = Field("", description=BLOCKS_HELP)
    noise_kind: NoiseKind = Field("gaussian", description=KIND_HELP)
    noise_seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the layer noise; every frame gets the same "
                            "noise maps (item 0's), so only z changes along the walk")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return block_strength_problems(constants)

    def run(self, ctx: RunContext) -> Outputs:
        images = interpolate(self.gan.model, self.seed_a, self.seed_b, self.frames, _noise(self), self.slerp)
        return self.Outputs(image=nchw_to_image(images))
