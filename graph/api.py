"""The engine from Python: one call runs a workflow (a file, an API prompt or a UI workflow) and returns the
report with the values.

    import comfyui_genart
    report = comfyui_genart.run_workflow("workflows/generate.json", keep=["6"])
    image = report.outputs["6"]["image"]  # node 6's output named 'image'

For repeated runs in one process build an `Executor` with an `OutputCache` (graph.executor).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import WorkflowInvalid
from .workflow_io import WorkflowFileError, apply_overrides, load_workflow, parse_workflow

if TYPE_CHECKING:
    from .context import RunSettings
    from .executor import RunReport


def progress_bars(quiet: bool) -> Any:
    """A progress factory drawing tqdm bars on stderr (none when quiet)."""
    from tqdm import tqdm

    def make(total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, leave=False, disable=quiet, file=sys.stderr, dynamic_ncols=True)

    return make


def make_settings(*, input_dir: str | Path = "input", output_dir: str | Path = "output",
                  temp_dir: str | Path = "temp", models_dirs: Sequence[str | Path] = ("models",),
                  device: str = "auto", dtype: str = "float32", allow_any_path: bool = False,
                  progress: bool = False) -> RunSettings:
    """RunSettings as the command line makes them: folders resolved from the working directory (the pack's
    own input/ and models/ are searched last), device 'auto' = CUDA when torch sees one."""
    import torch

    from .context import RunSettings, SilentProgress
    from .safety import Paths

    if device == "auto":
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise WorkflowFileError(f"device {device!r} was asked for but torch sees no CUDA device; use 'cpu'")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise WorkflowFileError(f"dtype {dtype!r}: use float32, float16 or bfloat16")
    paths = Paths(input_dir=Path(input_dir).resolve(), output_dir=Path(output_dir).resolve(),
                  temp_dir=Path(temp_dir).resolve(), models_dirs=[Path(m).resolve() for m in models_dirs],
                  allow_any_path=allow_any_path)
    return RunSettings(paths=paths, device=chosen, dtype=getattr(torch, dtype),
                       progress_factory=progress_bars(False) if progress else SilentProgress)


def registry() -> Any:
    # The pack's root package assembles the node library; the engine never names node modules.
    from .. import REGISTRY

    return REGISTRY


def run_workflow(workflow: str | Path | dict[str, Any], *, keep: Iterable[str] | Literal["all"] = (),
                 overrides: Sequence[str] = (), settings: RunSettings | None = None,
                 **folders_and_device: Any) -> RunReport:
    """Validate and run `workflow`: a .json/.png file, an API prompt or a UI workflow (dict).

    `keep`: node ids whose values the report should carry besides the output nodes' (or "all");
    `overrides`: "ID.INPUT=VALUE" strings as the CLI's --set; `settings` or the keywords of `make_settings`
    (input_dir, output_dir, temp_dir, models_dirs, device, dtype, progress). Raises WorkflowInvalid (with
    ComfyUI's error body in `.to_json()`) before anything runs, or NodeExecutionError.
    """
    from .comfy import object_info
    from .executor import Executor

    nodes = registry()
    info = object_info(nodes)
    if isinstance(workflow, dict):
        prompt, ui = parse_workflow(workflow, info)
    else:
        prompt, ui = load_workflow(Path(workflow), info)
    prompt = apply_overrides(prompt, list(overrides))
    executor = Executor(nodes, settings or make_settings(**folders_and_device))
    return executor.run(prompt, ui, keep=keep)


__all__ = ["WorkflowInvalid", "make_settings", "progress_bars", "registry", "run_workflow"]
