"""`python -m graph.run WORKFLOW` from the repository root.

Run that way, `graph` is a top-level package and the node library (which imports the engine
relatively, as ComfyUI requires) is not reachable from it. So this module loads the repository root
as one package under a stable name, `comfyui_genart` (the installed name too), and hands over to that
copy's CLI: one engine, one registry.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "comfyui_genart"


def load_pack() -> ModuleType:
    """The repository root imported as `comfyui_genart` (reused if already imported)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(PACKAGE, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the pack from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(PACKAGE, None)
        raise
    return module


def main(argv: list[str] | None = None) -> int:
    if __package__ == "graph":
        load_pack()
        from comfyui_genart.graph.cli import main as cli_main  # the one copy every node registers in
    else:
        from .cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
