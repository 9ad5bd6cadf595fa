"""Compile a Node class into a NodeSpec once, at registration: inputs, outputs and per-input validators.

Everything downstream (validation, ComfyUI's INPUT_TYPES, the UI-format converter, --list-nodes)
reads the spec, never the pydantic internals.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types as at
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from .errors import clip, short_repr
from .node import FileInput, Node, NodeOutputs, Widget
from .types import Socket

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
_MISSING = object()
_PLAIN = {int: "INT", float: "FLOAT", str: "STRING", bool: "BOOLEAN"}


class NodeDefinitionError(TypeError):
    """A node class is declared wrongly; raised when the node library is imported."""


@dataclass
class InputSpec:
    name: str
    type: str  # ComfyUI type name; "COMBO" for Literal fields
    is_socket: bool  # links only (no widget)
    required: bool
    description: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    file: FileInput | None = None
    adapter: TypeAdapter[Any] | None = None
    # Converted values of scalar constants, keyed by (type, value): workflows repeat constants a lot.
    memo: dict[tuple[Any, Any], Any] = field(default_factory=dict, repr=False)

    @property
    def is_widget(self) -> bool:
        return not self.is_socket

    def comfy_entry(self) -> tuple:
        """The (TYPE, options) tuple ComfyUI's INPUT_TYPES holds for this input."""
        opts = {k: v for k, v in self.options.items() if v is not None}
        if self.description:
            opts["tooltip"] = self.description
        if self.is_socket:
            return (self.type, opts)
        if self.default is not None:
            opts["default"] = self.default
        if self.choices is not None:
            return (list(self.choices), opts)
        if self.file is not None and self.file.listed:
            # A file picker is a combo of the files found; ComfyUI's INPUT_TYPES fills the list in.
            return ([], opts)
        return (self.type, opts)

    def validate(self, value: Any) -> Any:
        """The value converted to the field's type; raises pydantic's ValidationError."""
        if self.adapter is None:
            raise TypeError(f"input {self.name!r} is a socket; it takes links, not constants")
        key = (type(value), value) if isinstance(value, (str, int, float, bool)) else None
        if key is not None:
            found = self.memo.get(key, _MISSING)
            if found is not _MISSING:
                return found
        result = self.adapter.validate_python(value)
        if key is not None and len(self.memo) < 4096:
            self.memo[key] = result
        return result


@dataclass
class OutputSpec:
    name: str
    type: str
    description: str


@dataclass
class NodeSpec:
    class_type: str
    display_name: str
    category: str
    description: str
    version: int
    output_node: bool
    cacheable: bool
    needs_grad: bool
    persist_outputs: bool
    inputs: dict[str, InputSpec]
    outputs: list[OutputSpec]
    has_checks: bool = False  # the class overrides Node.check_constants
    file_inputs: list[InputSpec] = field(init=False)
    # Value of every input a prompt may leave out (widget defaults, None for optional sockets).
    defaults: dict[str, Any] = field(init=False)
    must_give: list[str] = field(init=False)  # required inputs without a default
    output_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.file_inputs = [i for i in self.inputs.values() if i.file is not None]
        self.defaults = {i.name: i.default for i in self.inputs.values()
                         if i.default is not None or not i.required}
        self.must_give = [i.name for i in self.inputs.values() if i.required and i.name not in self.defaults]
        self.output_names = tuple(o.name for o in self.outputs)

    @property
    def widget_order(self) -> list[InputSpec]:
        """Widget inputs in the server's order: required first, then optional (the UI-format layout)."""
        ins = list(self.inputs.values())
        return [i for i in ins if i.required and i.is_widget] + [i for i in ins if not i.required and i.is_widget]

    def input_types(self) -> dict[str, dict[str, tuple]]:
        required = {i.name: i.comfy_entry() for i in self.inputs.values() if i.required}
        optional = {i.name: i.comfy_entry() for i in self.inputs.values() if not i.required}
        out: dict[str, dict[str, tuple]] = {"required": required}
        if optional:
            out["optional"] = optional
        return out

    def json_schema(self) -> dict[str, Any]:
        """What --list-nodes prints: a stable, documented description of the node."""
        return {
            "class_type": self.class_type,
            "display_name": self.display_name,
            "category": self.category,
            "description": self.description,
            "version": self.version,
            "output_node": self.output_node,
            "inputs": {
                i.name: {
                    "type": i.type,
                    "required": i.required,
                    "widget": i.is_widget,
                    "description": i.description,
                    **({"default": i.default} if i.is_widget and i.default is not None else {}),
                    **({"choices": list(i.choices)} if i.choices is not None else {}),
                    **{k: v for k, v in i.options.items() if k in ("min", "max", "step")},
                }
                for i in self.inputs.values()
            },
            "outputs": [{"name": o.name, "type": o.type, "description": o.description} for o in self.outputs],
        }


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(annotation)):
            return args[0], True
    return annotation, False


def _markers(annotation: Any, info: FieldInfo) -> tuple[Any, list[Any]]:
    """The bare type and every metadata object, from Annotated layers and the FieldInfo."""
    metadata = list(info.metadata)
    while get_origin(annotation) is Annotated:
        metadata.extend(annotation.__metadata__)
        annotation = get_args(annotation)[0]
    return annotation, metadata


def _socket_type(annotation: Any, metadata: list[Any]) -> str | None:
    for m in metadata:
        if isinstance(m, Socket):
            return m.name
    return None


def _first(metadata: list[Any], kind: type) -> Any:
    return next((m for m in metadata if isinstance(m, kind)), None)


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.Ge):
            opts["min"] = m.ge
        elif isinstance(m, at.Gt):
            opts["min"] = m.gt
        elif isinstance(m, at.Le):
            opts["max"] = m.le
        elif isinstance(m, at.Lt):
            opts["max"] = m.lt
    return opts


# An INT widget holds a 64-bit number (ComfyUI's seeds go up to 2**64 - 1).
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1


def _check_int(value: Any) -> Any:
    """Before pydantic's lax int conversion: no bools (True is no number of steps), nothing beyond 64 bits."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise PydanticCustomError("int_too_wide", "the number does not fit in 64 bits")
    return value


def _check_float(value: Any) -> Any:
    """Before pydantic's lax float conversion: no bools, no NaN or infinity (given as numbers or as text)."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value  # pydantic says it is no number
    if isinstance(number, float) and not math.isfinite(number):
        raise PydanticCustomError("finite_number", "the number is not finite (NaN or infinity)")
    if isinstance(number, int) and abs(number) > 1 << 1023:
        raise PydanticCustomError("finite_number", "the number is beyond the range of a FLOAT")
    return value


_NUMBER_CHECKS = {int: _check_int, float: _check_float}


def _adapter(info: FieldInfo, bare: Any = None) -> TypeAdapter[Any]:
    """A validator for one field alone, with its bounds (constants are checked input by input); INT and FLOAT
    fields refuse bools, NaN, infinity and ints beyond 64 bits first."""
    check = _NUMBER_CHECKS.get(bare) if isinstance(bare, type) else None
    if check is None:
        return TypeAdapter(Annotated[info.annotation, info])  # type: ignore[arg-type]
    return TypeAdapter(Annotated[info.annotation, info, BeforeValidator(check)])  # type: ignore[arg-type]


def _input_spec(cls: type[Node], name: str, info: FieldInfo) -> InputSpec:
    where = f"{cls.__name__}.{name}"
    if not (info.description or "").strip():
        raise NodeDefinitionError(f"{where}: every input needs a description (it becomes the tooltip)")
    annotation, optional = _strip_optional(info.annotation)
    bare, metadata = _markers(annotation, info)
    has_default = info.default is not PydanticUndefined or info.default_factory is not None
    default = info.default if info.default is not PydanticUndefined else None
    required = not (optional and default is None)
    socket = _socket_type(bare, metadata)
    adapter = _adapter(info, bare) if socket is None else None
    if socket is not None:
        if socket in WIDGET_TYPES and has_default and default is not None:
            # A primitive with a default is a widget that may also be linked.
            return _widget_spec(where, name, info, bare, metadata, required, default, adapter)
        return InputSpec(name, socket, True, required, info.description or "", adapter=adapter)
    return _widget_spec(where, name, info, bare, metadata, required, default, adapter)


def _widget_spec(where: str, name: str, info: FieldInfo, bare: Any, metadata: list[Any], required: bool,
                 default: Any, adapter: TypeAdapter | None) -> InputSpec:
    widget = _first(metadata, Widget) or Widget()
    file = _first(metadata, FileInput)
    options: dict[str, Any] = {}
    choices = None
    if get_origin(bare) is Literal:
        choices = get_args(bare)
        typ = "COMBO"
    elif bare in _PLAIN:
        typ = _PLAIN[bare]
    else:
        raise NodeDefinitionError(
            f"{where}: type {bare!r} maps to no ComfyUI widget; annotate it with a socket type from "
            "graph.types (Image, Latent, ...) or use int/float/str/bool/Literal")
    if typ in ("INT", "FLOAT"):
        options.update(_bounds(metadata))
        options["step"] = widget.step if widget.step is not None else (1 if typ == "INT" else 0.01)
    if typ == "STRING" and widget.multiline:
        options["multiline"] = True
    if widget.force_input:
        options["forceInput"] = True
    if widget.control_after_generate is not None:
        options["control_after_generate"] = widget.control_after_generate
    if file is not None and file.image_upload:
        options["image_upload"] = True
    options.update(widget.extra)
    if adapter is None:
        adapter = _adapter(info, bare)
    if required and default is None and typ != "COMBO" and file is None:
        raise NodeDefinitionError(f"{where}: a widget needs a default (ComfyUI shows it when the node is added)")
    return InputSpec(name, typ, False, required, info.description or "", default, choices, options, file, adapter)


def _output_specs(cls: type[Node]) -> list[OutputSpec]:
    outputs_cls = cls.__dict__.get("Outputs") or getattr(cls, "Outputs", None)
    if not (isinstance(outputs_cls, type) and issubclass(outputs_cls, NodeOutputs)):
        raise NodeDefinitionError(f"{cls.__name__}: declare `class Outputs(NodeOutputs)` (it may be empty)")
    specs = []
    for name, info in outputs_cls.model_fields.items():
        bare, metadata = _markers(info.annotation, info)
        typ = _socket_type(bare, metadata) or _PLAIN.get(bare)
        if typ is None:
            raise NodeDefinitionError(f"{cls.__name__}.Outputs.{name}: type {bare!r} maps to no socket type")
        specs.append(OutputSpec(name, typ, info.description or ""))
    return specs


def compile_spec(cls: type[Node]) -> NodeSpec:
    """Check a node class's declaration and build its spec; raises NodeDefinitionError."""
    name = cls.__name__
    doc = (cls.__doc__ or "").strip()
    if not doc or cls.__doc__ == Node.__doc__:
        raise NodeDefinitionError(f"{name}: a node needs a docstring (its first line is the UI description)")
    for attr in ("CLASS_TYPE", "CATEGORY"):
        if not isinstance(getattr(cls, attr, None), str):
            raise NodeDefinitionError(f"{name}: set {attr} as a class attribute string")
    if cls.run is Node.run:
        raise NodeDefinitionError(f"{name}: implement run(self, ctx) -> Outputs")
    reserved = [n for n in cls.model_fields if n.startswith("genart_")]
    if reserved:
        raise NodeDefinitionError(f"{name}: input names starting with 'genart_' are reserved for ComfyUI's "
                                  f"hidden inputs: {reserved}")
    inputs = {n: _input_spec(cls, n, info) for n, info in cls.model_fields.items()}
    return NodeSpec(
        class_type=cls.CLASS_TYPE,
        display_name=cls.DISPLAY_NAME or _display_name(cls.CLASS_TYPE),
        category=cls.CATEGORY,
        description=doc,
        version=cls.VERSION,
        output_node=cls.OUTPUT_NODE,
        cacheable=cls.CACHEABLE,
        needs_grad=cls.NEEDS_GRAD,
        persist_outputs=cls.PERSIST_OUTPUTS,
        inputs=inputs,
        outputs=_output_specs(cls),
        has_checks=cls.check_constants.__func__ is not Node.check_constants.__func__,  # type: ignore[attr-defined]
    )


def _display_name(class_type: str) -> str:
    """GenArtResizeImage -> "Resize Image (GenArt)"."""
    base = class_type.removeprefix("GenArt")
    words = "".join(" " + c if c.isupper() and i and not base[i - 1].isupper() else c for i, c in enumerate(base))
    return f"{words.strip()} (GenArt)" if base != class_type else words.strip()


def describe_validation_error(err: ValidationError, ins: InputSpec | None = None) -> tuple[str, str, dict[str, Any]]:
    """Map pydantic's first error to ComfyUI's (type, message, details) for one input value; with the input's
    spec, a conversion error also says what the input takes."""
    e = err.errors()[0]
    ctx = e.get("ctx", {})
    kind = e["type"]
    value = clip(e.get("input"))  # as ComfyUI prints it: 500, not '500'
    # ComfyUI's wording for inclusive bounds; an exclusive one says so (0 is not "smaller than min of 0").
    if kind == "greater_than_equal":
        return "value_smaller_than_min", f"Value {value} smaller than min of {ctx['ge']}", {"min": ctx["ge"]}
    if kind == "greater_than":
        return "value_smaller_than_min", f"Value {value} must be greater than {ctx['gt']}", {"min": ctx["gt"]}
    if kind == "less_than_equal":
        return "value_bigger_than_max", f"Value {value} bigger than max of {ctx['le']}", {"max": ctx["le"]}
    if kind == "less_than":
        return "value_bigger_than_max", f"Value {value} must be less than {ctx['lt']}", {"max": ctx["lt"]}
    if kind == "literal_error":
        return "value_not_in_list", f"Value not in list: {short_repr(e.get('input'))} not in {ctx.get('expected')}", {}
    takes = f"; {ins.name} takes {allowed(ins)}" if ins is not None else ""
    if kind in ("bool_not_number", "int_too_wide", "finite_number"):
        return "invalid_input_type", f"Value {short_repr(e.get('input'))} is refused: {e['msg']}{takes}", {}
    return "invalid_input_type", f"Failed to convert an input value to the expected type: {e['msg']}{takes}", {}


def allowed(ins: InputSpec) -> str:
    """What an input accepts, for messages: 'an INT from 1 to 8192', 'one of [...]', 'a STRING'."""
    if ins.choices is not None:
        return f"one of {short_repr(list(ins.choices), 300)}"
    low, high = ins.options.get("min"), ins.options.get("max")
    if ins.type in ("INT", "FLOAT"):
        kind = "an INT (a whole number)" if ins.type == "INT" else "a FLOAT (a finite number)"
        if low is not None and high is not None:
            return f"{kind} from {low} to {high}"
        if low is not None:
            return f"{kind} of at least {low}"
        if high is not None:
            return f"{kind} of at most {high}"
        return f"{kind} that fits in 64 bits" if ins.type == "INT" else kind
    if ins.type == "BOOLEAN":
        return "a BOOLEAN (true or false)"
    if ins.type == "STRING":
        return "a STRING (text)" + (" naming a file" if ins.file is not None else "")
    return f"a {ins.type}"
