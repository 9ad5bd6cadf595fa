"""Run reference implementations (torchvision, pytorch-fid) in a child process.

Installing torchvision into the main environment breaks diffusers/transformers, so the reference packages
live in their own folder, put on the child's path only:

    pip install --no-deps --target .venv/references -r requirements-references.txt

Without that folder the tests that need it skip, unless GENART_REQUIRE_REFERENCES=1 (CI), where they fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / ".venv" / "references"
INSTALL = "pip install --no-deps --target .venv/references -r requirements-references.txt"

# Runs in the child before the caller's code. The torchvision wheel may be built for CUDA and its ops
# library then does not load against a CPU torch; torchvision._meta_registrations registers fake kernels
# for those ops and would fail on import. Nothing the references use needs them, so an empty module
# stands in for it.
_PRELUDE = """\
import sys, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
_dir = Path(sys.argv[1])
inputs = {p.stem[len("in_"):]: np.load(p) for p in sorted(_dir.glob("in_*.npy"))}
outputs = {}
"""
_EPILOGUE = """
np.savez(_dir / "outputs.npz", **{k: np.asarray(v) for k, v in outputs.items()})
"""


def require_references() -> Path:
    """The reference packages' folder; skips the test when it is missing (fails under
    GENART_REQUIRE_REFERENCES=1)."""
    if not REFERENCES.is_dir():
        message = f"reference packages not installed: {INSTALL}"
        if os.environ.get("GENART_REQUIRE_REFERENCES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCES


def run_reference(code: str, torch_home: Path | None = None, timeout: float = 600,
                  **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Run `code` in a fresh interpreter that sees the reference packages. The child reads the arrays as the
    dict `inputs` (by keyword name) and puts arrays into the dict `outputs`, which come back here."""
    references = require_references()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(references), env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
    with tempfile.TemporaryDirectory(prefix="genart-reference-") as tmp:
        folder = Path(tmp)
        for name, array in arrays.items():
            np.save(folder / f"in_{name}.npy", np.asarray(array))
        script = folder / "reference.py"
        script.write_text(_PRELUDE + textwrap.dedent(code) + _EPILOGUE)
        done = subprocess.run([sys.executable, str(script), str(folder)], env=env, cwd=tmp, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise AssertionError(f"reference code failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        with np.load(folder / "outputs.npz") as data:
            return {k: data[k] for k in data.files}
