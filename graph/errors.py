"""Errors in ComfyUI's shapes, so tools that read ComfyUI's answers read ours."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeError:
    """One entry of `node_errors[id]["errors"]` (ComfyUI's validation error shape)."""

    type: str
    message: str
    input_name: str | None = None
    received_value: Any = None
    details: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        extra_info: dict[str, Any] = dict(self.extra)
        if self.input_name is not None:
            extra_info["input_name"] = self.input_name
            extra_info["received_value"] = _jsonable(self.received_value)
        return {"type": self.type, "message": self.message,
                "details": self.details or (self.input_name or ""), "extra_info": extra_info}


# Ints wider than this are written as text: Python refuses to print ints of more than 4300 digits, and no
# workflow value needs one.
_WIDEST_INT = 1 << 128


def _jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON can carry it: containers followed 32 levels deep, anything else as a short repr."""
    if value is None or isinstance(value, (str, float, bool)):
        return value
    if isinstance(value, int):
        return value if -_WIDEST_INT < value < _WIDEST_INT else short_repr(value)
    if depth >= 32:
        return short_repr(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else short_repr(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return short_repr(value)


def clip(text: Any, limit: int = 120) -> str:
    """Text for a message as it is (a node id, a class type, an exception's message), cut to `limit` characters
    (saying how long it was); anything but text as `short_repr`."""
    if not isinstance(text, str):
        return short_repr(text, limit)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_repr(value: Any, limit: int = 120) -> str:
    """repr() for a message: cut to about `limit` characters (saying how long the text was), never failing on
    ints too wide to print or containers nested too deep."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_WIDEST_INT < value < _WIDEST_INT:
        return f"<{'-' if value < 0 else ''}int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int inside too wide to print, or a nesting too deep
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:limit]}... ({size})"


class WorkflowInvalid(Exception):
    """Validation failed; `.to_json()` is the body ComfyUI would answer with (HTTP 400)."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, dict[str, Any]]) -> None:
        self.error = error
        self.node_errors = node_errors
        super().__init__(self.summary())

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}

    def summary(self) -> str:
        lines = [f"{self.error['message']}" + (f": {self.error['details']}" if self.error.get("details") else "")]
        for node_id, entry in self.node_errors.items():
            for e in entry["errors"]:
                where = f"node {clip(node_id)} ({clip(entry['class_type'])})"
                name = e["extra_info"].get("input_name")
                if name is not None:
                    where += f", input {short_repr(name)} = {short_repr(e['extra_info'].get('received_value'))}"
                lines.append(f"  {where}: {clip(e['message'], 2000)} [{e['type']}]")
        return "\n".join(lines)


class NodeExecutionError(Exception):
    """A node raised while running; carries ComfyUI's execution_error fields."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException) -> None:
        self.node_id, self.class_type, self.cause = node_id, class_type, cause
        super().__init__(f"node {node_id} ({class_type}) failed: {type(cause).__name__}: {cause}")

    def to_json(self) -> dict[str, Any]:
        import traceback

        return {"node_id": self.node_id, "node_type": self.class_type,
                "exception_type": type(self.cause).__name__, "exception_message": str(self.cause),
                "traceback": traceback.format_exception(self.cause)}
