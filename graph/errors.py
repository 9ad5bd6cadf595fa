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


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


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
                where = f"node {node_id} ({entry['class_type']})"
                name = e["extra_info"].get("input_name")
                if name is not None:
                    where += f", input {name!r} = {e['extra_info'].get('received_value')!r}"
                lines.append(f"  {where}: {e['message']} [{e['type']}]")
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
