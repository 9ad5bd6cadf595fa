"""The torchvision-free FID Inception against pytorch-fid's, on the same (seeded random) weights file."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from comfyui_genart.core.inception import INCEPTION_FILE, FIDInceptionV3, load_fid_inception

from references import require_references, run_reference

# Measured: bit-identical to pytorch-fid (same kernels, one thread). The tolerance leaves room for other
# CPUs/BLAS builds; features are ~0.4 and differ between images by ~1e-2 per feature (up to ~0.3), and a
# change such as counting the padding in one average pool moves them by far more than this.
ATOL, RTOL = 1e-5, 1e-5


def _seeded_inception(seed: int = 0) -> FIDInceptionV3:
    """Random weights that keep activations near unit scale through all 94 convolutions: He-normal
    convolutions, batch norms whose running stats and affine terms are close to (but not) the identity."""
    g = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("conv.weight"):
                t.copy_(torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5)
            elif name.endswith(("bn.weight", "running_var")):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith(("bn.bias", "running_mean")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.startswith("fc."):
                t.copy_(torch.randn(t.shape, generator=g) * 0.01)
    return model.eval()


def _images(g: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Smooth random colour fields plus noise, so that images differ in more than their noise."""
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * coarse + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The same seeded weights as ComfyUI's models/inception/ file, pytorch-fid's TORCH_HOME cache entry and
    a .safetensors copy."""
    root = tmp_path_factory.mktemp("inception")
    state = _seeded_inception().state_dict()
    files = {"pth": root / "models" / "inception" / INCEPTION_FILE,
             "hub": root / "torch" / "hub" / "checkpoints" / INCEPTION_FILE,
             "safetensors": root / "models" / "inception" / INCEPTION_FILE.replace(".pth", ".safetensors")}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, files["pth"])
    torch.save(state, files["hub"])
    save_file({k: v.contiguous() for k, v in state.items()}, files["safetensors"])
    return {"root": root, "state": state, **files}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return {"small": _images(g, 4, 32, 32), "wide": _images(g, 2, 64, 48)}


def _no_network(*args, **kwargs):
    raise OSError("network access refused in this test")


@pytest.fixture(scope="module")
def ours(weights, images):
    """Our features for each image batch, loaded and run with sockets refused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        model = load_fid_inception(weights["pth"])
        with torch.inference_mode():
            return {name: model(x) for name, x in images.items()}


def test_loaded_model(weights):
    model = load_fid_inception(weights["pth"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.num_features == 2048
    for name, t in model.state_dict().items():
        assert torch.equal(t, weights["state"][name]), name
    # Copied into the module's own allocations (torch aligns them to 64 bytes), not views of the file.
    assert all(p.data_ptr() % 64 == 0 for p in model.parameters())


def test_matches_pytorch_fid(weights, images, ours):
    code = """
    import socket
    def _refuse(*args, **kwargs):
        raise OSError("network access refused: the weights should come from TORCH_HOME")
    socket.socket = socket.create_connection = _refuse
    from pytorch_fid.inception import InceptionV3
    model = InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    with torch.no_grad():
        for name, x in inputs.items():
            outputs[name] = model(torch.from_numpy(x))[0].squeeze(-1).squeeze(-1).numpy()
    """
    theirs = run_reference(code, torch_home=weights["root"] / "torch",
                           **{k: v.numpy() for k, v in images.items()})
    for name, x in images.items():
        mine, ref = ours[name], torch.from_numpy(theirs[name])
        assert mine.dtype == torch.float32 and mine.shape == ref.shape == (len(x), 2048)
        diff = (mine - ref).abs()
        print(f"{name}: max abs diff {diff.max():.3g}, max rel diff {(diff / ref.abs().clamp_min(1e-3)).max():.3g}, "
              f"mean std across images {mine.std(0).mean():.3g}")
        torch.testing.assert_close(mine, ref, atol=ATOL, rtol=RTOL)
        # Not degenerate: features differ between images far beyond the tolerance.
        assert mine.std(0).mean() > 1e-3 and (mine[0] - mine[1]).abs().max() > 1e-2


def test_safetensors_gives_same_features(weights, images, ours):
    model = load_fid_inception(weights["safetensors"])
    with torch.inference_mode():
        assert torch.equal(model(images["small"]), ours["small"])


def test_wrong_file_is_named(weights, tmp_path):
    state = dict(weights["state"])
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong\.pth") as err:
        load_fid_inception(path)
    message = str(err.value)
    assert "Mixed_6b.branch7x7_2.conv.weight" in message and "extra.weight" in message
    assert "fc.weight (1000, 2048) (expected (1008, 2048))" in message


def test_file_without_batchnorm_counters_loads(weights, tmp_path):
    """Old (pre torch 0.4.1) state dicts have no num_batches_tracked; load_state_dict fills them in."""
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in weights["state"].items() if not k.endswith("num_batches_tracked")}, path)
    load_fid_inception(path)


def test_reference_runner_calls_pytorch_fid():
    """The reference runner itself: pytorch-fid's Fréchet distance on diagonal Gaussians, whose closed form is
    |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))."""
    require_references()
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    out = run_reference("""
    from pytorch_fid.fid_score import calculate_frechet_distance
    outputs["fid"] = calculate_frechet_distance(inputs["mu1"], np.diag(inputs["s1"]), inputs["mu2"],
                                                np.diag(inputs["s2"]))
    """, mu1=mu1, mu2=mu2, s1=s1, s2=s2)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert out["fid"] == pytest.approx(expected, rel=1e-9)
