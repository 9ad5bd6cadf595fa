"""Tiny nodes for engine tests: numbers, a file reader, a slow node, a gradient node."""

from typing import Annotated, Any

import torch
from pydantic import Field


def build_registry(pack: Any) -> Any:
    from comfyui_genart.graph.context import RunContext
    from comfyui_genart.graph.node import FileInput, Node, NodeOutputs
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.types import FloatSocket, Image, StringSocket

    class Number(Node):
        """A constant number."""

        CLASS_TYPE = "GenArtTestNumber"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            value: FloatSocket = Field(description="the number")

        value: float = Field(1.0, ge=-100, le=100, description="the number")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(value=self.value)

    class Add(Node):
        """a + b."""

        CLASS_TYPE = "GenArtTestAdd"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            value: FloatSocket = Field(description="a + b")

        a: FloatSocket = Field(description="first term")
        b: float = Field(1.0, ge=-100, le=100, description="second term")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(value=self.a + self.b)

    class Sink(Node):
        """Shows a number."""

        CLASS_TYPE = "GenArtTestSink"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        value: FloatSocket = Field(description="number to show")

        def run(self, ctx: RunContext) -> Outputs:
            ctx.ui["value"] = [self.value]
            return self.Outputs()

    class Random(Node):
        """A random number (no seed: never cached)."""

        CLASS_TYPE = "GenArtTestRandom"
        CATEGORY = "GenArt/test"
        CACHEABLE = False

        class Outputs(NodeOutputs):
            value: FloatSocket = Field(description="uniform in [0, 1)")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(value=float(torch.rand(())))

    class ReadText(Node):
        """Reads a text file from the input folder."""

        CLASS_TYPE = "GenArtTestReadText"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            text: StringSocket = Field(description="file contents")

        name: Annotated[str, FileInput("input", (".txt",))] = Field(description="file name")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(text=ctx.paths.resolve_input("input", self.name).read_text())

    class Length(Node):
        """Length of a string, as a number."""

        CLASS_TYPE = "GenArtTestLength"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            value: FloatSocket = Field(description="len(text)")

        text: StringSocket = Field(description="text")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(value=float(len(self.text)))

    class Tensor(Node):
        """A filled tensor; expensive, so persisted to the disk cache."""

        CLASS_TYPE = "GenArtTestTensor"
        CATEGORY = "GenArt/test"
        PERSIST_OUTPUTS = True

        class Outputs(NodeOutputs):
            image: Image = Field(description="[1, size, size, 3] filled with value")

        value: float = Field(0.5, ge=0, le=1, description="fill value")
        size: int = Field(4, ge=1, le=64, description="side")

        def run(self, ctx: RunContext) -> Outputs:
            return self.Outputs(image=torch.full((1, self.size, self.size, 3), self.value, device=ctx.device))

    class ShowDevice(Node):
        """Shows where a tensor lives."""

        CLASS_TYPE = "GenArtTestShowDevice"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        image: Image = Field(description="any tensor")

        def run(self, ctx: RunContext) -> Outputs:
            ctx.ui["device"] = [self.image.device.type]
            return self.Outputs()

    class Slow(Node):
        """Counts steps with a progress bar; cancels the run at `cancel_at` (for interruption tests)."""

        CLASS_TYPE = "GenArtTestSlow"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            image: Image = Field(description="the input, unchanged")

        image: Image = Field(description="any image")
        steps: int = Field(5, ge=1, le=100, description="steps")
        cancel_at: int = Field(-1, ge=-1, le=100, description="step at which to cancel the run; -1 never")

        def run(self, ctx: RunContext) -> Outputs:
            with ctx.progress(self.steps) as bar:
                for i in range(self.steps):
                    if i == self.cancel_at:
                        ctx.settings.cancel.set()
                    bar.update()
            return self.Outputs(image=self.image)

    class Grad(Node):
        """d/dx sum(x^2) = 2x: needs autograd even inside inference mode."""

        CLASS_TYPE = "GenArtTestGrad"
        CATEGORY = "GenArt/test"
        NEEDS_GRAD = True

        class Outputs(NodeOutputs):
            image: Image = Field(description="2 * image")

        image: Image = Field(description="any image")

        def run(self, ctx: RunContext) -> Outputs:
            x = self.image.clone().requires_grad_(True)
            (x * x).sum().backward()
            assert x.grad is not None
            return self.Outputs(image=x.grad.detach())

    registry = Registry()
    for cls in (Number, Add, Sink, Random, ReadText, Length, Tensor, ShowDevice, Slow, Grad):
        registry.register(cls)
    for _, cls in pack.REGISTRY.items():
        registry.register(cls)
    return registry
