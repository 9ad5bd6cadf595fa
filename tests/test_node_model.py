"""Node declarations: definition errors at import time, and the ComfyUI V1 contract generated from them."""
from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from pydantic import Field


def make(pack, **overrides):
    """A node class built from pieces, to test one declaration mistake at a time."""
    from comfyui_genart.graph.node import Node, NodeOutputs
    from comfyui_genart.graph.types import Image

    class Outputs(NodeOutputs):
        image: Image = Field(description="out")

    namespace = {
        "__doc__": "A test node.", "CLASS_TYPE": "GenArtTestMade", "CATEGORY": "GenArt/test",
        "Outputs": Outputs, "__annotations__": {"image": Image}, "image": Field(description="in"),
        "run": lambda self, ctx: Outputs(image=self.image), "__module__": __name__,
    }
    namespace.update(overrides)
    return type("Made", (Node,), namespace)


def test_node_definition_errors_are_raised_at_registration(pack):
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.spec import NodeDefinitionError

    cases = {
        "docstring": make(pack, __doc__=None),
        "description": make(pack, image=Field()),
        "maps to no ComfyUI widget": make(pack, __annotations__={"image": list}, image=Field([], description="x")),
    }
    for expected, cls in cases.items():
        with pytest.raises(NodeDefinitionError, match=expected):
            Registry().register(cls)
    registry = Registry()
    registry.register(make(pack))
    with pytest.raises(NodeDefinitionError, match="duplicate class_type 'GenArtTestMade'"):
        registry.register(make(pack))
    with pytest.raises(NodeDefinitionError, match="must start with 'GenArt'"):
        Registry().register(make(pack, CLASS_TYPE="Resize"))


def test_node_without_run_is_refused(pack):
    from comfyui_genart.graph.node import Node
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.spec import NodeDefinitionError

    cls = make(pack)
    cls.run = Node.run
    with pytest.raises(NodeDefinitionError, match="implement run"):
        Registry().register(cls)


def test_node_input_types_generated_from_fields(pack):
    from comfyui_genart.graph.comfy import comfy_class
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.types import Mask

    cls = make(pack, __annotations__={"image": pack.graph.types.Image, "mode": Literal["a", "b"],
                                      "strength": float, "seed": int, "mask": Mask | None},
               mode=Field("b", description="pick one"),
               strength=Field(0.5, ge=0.0, le=1.0, description="how much"),
               seed=Field(0, ge=0, le=2**32, description="noise seed"),
               mask=Field(None, description="optional mask, [B, H, W]"))
    Registry().register(cls)
    v1 = comfy_class(cls)
    types_ = v1.INPUT_TYPES()
    assert list(types_["required"]) == ["image", "mode", "strength", "seed"]
    assert types_["required"]["image"] == ("IMAGE", {"tooltip": "in"})
    assert types_["required"]["mode"] == (["a", "b"], {"tooltip": "pick one", "default": "b"})
    assert types_["required"]["strength"] == (
        "FLOAT", {"min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "how much", "default": 0.5})
    assert types_["optional"] == {"mask": ("MASK", {"tooltip": "optional mask, [B, H, W]"})}
    assert types_["hidden"] == {"genart_prompt": "PROMPT", "genart_extra_pnginfo": "EXTRA_PNGINFO",
                                "genart_unique_id": "UNIQUE_ID"}
    assert v1.RETURN_TYPES == ("IMAGE",) and v1.RETURN_NAMES == ("image",)
    assert v1.CATEGORY == "GenArt/test" and v1.DESCRIPTION == "A test node."
    assert not hasattr(v1, "IS_CHANGED")


def test_node_comfy_class_runs_and_leaves_inference_mode_for_grad_nodes(toy_registry):
    from comfyui_genart.graph.comfy import comfy_class

    v1 = comfy_class(toy_registry.get("GenArtTestGrad"))
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    with torch.inference_mode():  # ComfyUI runs every node inside inference mode
        (grad,) = getattr(v1(), v1.FUNCTION)(image=x, genart_prompt={}, genart_extra_pnginfo={}, genart_unique_id="7")
    torch.testing.assert_close(grad, 2 * x, rtol=0, atol=0)


def test_node_comfy_class_validates_inputs_and_returns_ui(toy_registry):
    from pydantic import ValidationError

    from comfyui_genart.graph.comfy import comfy_class

    sink = comfy_class(toy_registry.get("GenArtTestSink"))
    assert sink().execute(value=2.5) == {"ui": {"value": [2.5]}, "result": ()}
    number = comfy_class(toy_registry.get("GenArtTestNumber"))
    with pytest.raises(ValidationError):
        number().execute(value=1e9)


def test_node_is_changed_for_file_and_random_nodes(toy_registry, paths):
    from comfyui_genart.graph.comfy import comfy_class
    from comfyui_genart.graph.context import RunSettings

    (paths.input_dir / "a.txt").write_text("x")
    reader = comfy_class(toy_registry.get("GenArtTestReadText"), settings_factory=lambda: RunSettings(paths=paths))
    before = reader.IS_CHANGED(name="a.txt")
    assert before == reader.IS_CHANGED(name="a.txt")
    (paths.input_dir / "a.txt").write_text("xyz")
    assert reader.IS_CHANGED(name="a.txt") != before
    assert reader.INPUT_TYPES()["required"]["name"][0] == ["a.txt"]
    rand = comfy_class(toy_registry.get("GenArtTestRandom"))
    assert math.isnan(rand.IS_CHANGED()) and rand.NOT_IDEMPOTENT


def test_node_library_every_field_documented_and_version_set(pack):
    for name, cls in pack.REGISTRY.items():
        spec = cls.spec
        assert spec.description, name
        assert all(i.description for i in spec.inputs.values()), name
        assert all(o.description for o in spec.outputs), name
        assert spec.category.startswith("GenArt/") or cls.HEADLESS_ONLY, name


def test_node_input_named_prompt_is_not_shadowed_by_comfyui_hidden_input(pack):
    """ComfyUI passes hidden inputs as keyword arguments: a text widget called `prompt` must survive."""
    from comfyui_genart.graph.comfy import HIDDEN, comfy_class

    v1 = comfy_class(pack.REGISTRY.get("GenArtEncodeText"))
    assert "prompt" in v1.INPUT_TYPES()["required"] and not set(HIDDEN) & set(v1.INPUT_TYPES()["required"])
    hidden = {key: {"1": {}} if value == "PROMPT" else "9" for key, value in HIDDEN.items()}
    seen = {}

    class Spy:
        model_max_length = 8

        def __call__(self, text, **kwargs):
            seen.setdefault("texts", []).append(text)
            raise RuntimeError("stop after tokenizing")

    from comfyui_genart.core.handles import TextEncoderHandle

    handle = TextEncoderHandle(tokenizer=Spy(), text_encoder=torch.nn.Linear(1, 1))
    handle.text_encoder.config = type("C", (), {"max_position_embeddings": 8})()
    with pytest.raises(RuntimeError, match="stop after tokenizing"):
        v1().execute(text_encoder=handle, prompt="a red cat", negative_prompt="", **hidden)
    assert seen["texts"] == [["a red cat"]]  # prompts are tokenized as a batch


def test_node_reserved_input_names_refused(pack):
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.spec import NodeDefinitionError

    cls = make(pack, __annotations__={"image": pack.graph.types.Image, "genart_prompt": str},
               genart_prompt=Field("", description="x"))
    with pytest.raises(NodeDefinitionError, match="reserved"):
        Registry().register(cls)
