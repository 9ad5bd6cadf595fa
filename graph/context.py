"""What a node sees while it runs: device, dtype, allowed paths, progress and interruption."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .safety import Paths


class Interrupted(Exception):
    """The run was cancelled; no partial outputs are kept."""


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[int, str], Progress]


class SilentProgress:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


class _CheckedProgress:
    """Wraps a progress bar so every update is also an interruption point."""

    def __init__(self, inner: Progress, check: Callable[[], None]) -> None:
        self.inner, self.check = inner, check

    def update(self, n: int = 1) -> None:
        self.check()
        self.inner.update(n)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _CheckedProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RunSettings:
    """Per-run settings shared by every node of one execution."""

    paths: Paths = field(default_factory=Paths)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    progress_factory: ProgressFactory = SilentProgress
    cancel: threading.Event = field(default_factory=threading.Event)
    # Extra interruption hook (ComfyUI's "processing interrupted" check inside ComfyUI).
    interrupt_hook: Callable[[], None] | None = None


@dataclass(slots=True)
class RunContext:
    """Handed to `Node.run`. Nodes never reach into the executor; they use this."""

    settings: RunSettings
    node_id: str = ""
    class_type: str = ""
    prompt: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    ui: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def dtype(self) -> torch.dtype:
        return self.settings.dtype

    @property
    def paths(self) -> Paths:
        return self.settings.paths

    def check_interrupted(self) -> None:
        if self.settings.cancel.is_set():
            raise Interrupted(f"cancelled while node {self.node_id} ({self.class_type}) was running")
        if self.settings.interrupt_hook is not None:
            self.settings.interrupt_hook()

    def progress(self, total: int, desc: str | None = None) -> _CheckedProgress:
        """A progress bar for `total` steps; each update is also a point where a run can be cancelled."""
        inner = self.settings.progress_factory(total, desc or f"{self.node_id} {self.class_type}")
        return _CheckedProgress(inner, self.check_interrupted)
