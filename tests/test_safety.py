"""Workflows from strangers: no escaping the folders, no unpickling, limits before running."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from PIL import Image


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/abs", "~/home", "C:/win", "a/./b",
                                    "bad|char", "dir/"])
def test_safety_save_prefix_outside_output_refused_at_validation(make_executor, prefix):
    from comfyui_genart.graph.errors import WorkflowInvalid

    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {}},
              "2": {"class_type": "GenArtSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}
    with pytest.raises(WorkflowInvalid) as info:
        make_executor().validate(prompt)
    (err,) = info.value.to_json()["node_errors"]["2"]["errors"]
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["input_name"] == "filename_prefix"
    assert "output folder" in err["message"] or "characters" in err["message"] or "no file name" in err["message"]


def test_safety_save_prefix_subfolder_allowed(make_executor, paths):
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 8, "height": 8}},
              "2": {"class_type": "GenArtSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a/b/c"}}}
    report = make_executor().run(prompt)
    assert report.ui["2"]["images"] == [{"filename": "c_00001_.png", "subfolder": "a/b", "type": "output"}]
    assert (paths.output_dir / "a" / "b" / "c_00001_.png").is_file()
    assert not list(paths.output_dir.rglob(".tmp-*"))  # atomic write left no temp file


def test_safety_save_counter_follows_comfyui_convention(make_executor, paths):
    (paths.output_dir / "x_00041_.png").write_bytes(b"")
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 8, "height": 8, "batch_size": 2}},
              "2": {"class_type": "GenArtSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    names = [i["filename"] for i in make_executor().run(prompt).ui["2"]["images"]]
    assert names == ["x_00042_.png", "x_00043_.png"]


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/../../x.png"])
def test_safety_image_name_outside_input_refused(make_executor, name):
    from comfyui_genart.graph.errors import WorkflowInvalid

    prompt = {"1": {"class_type": "GenArtLoadImage", "inputs": {"image": name}},
              "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        make_executor().validate(prompt)
    (err,) = info.value.to_json()["node_errors"]["1"]["errors"]
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["received_value"] == name


def test_safety_symlink_the_user_placed_in_input_is_followed(make_executor, paths, tmp_path):
    """As in ComfyUI: a link in the user's own input folder is theirs (a workflow cannot make one), so it is
    followed wherever it points; only the names a workflow gives are confined (tests/test_hardening.py)."""
    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    (paths.input_dir / "link.png").symlink_to(outside)
    report = make_executor().run({"1": {"class_type": "GenArtLoadImage", "inputs": {"image": "link.png"}},
                                  "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}},
                                 keep=["1"])
    assert tuple(report.outputs["1"]["image"].shape) == (1, 4, 4, 3)


def test_safety_load_image_with_alpha_gives_comfyui_mask(make_executor, paths):
    rgba = Image.new("RGBA", (5, 3), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 255, 0, 0))
    rgba.save(paths.input_dir / "a.png")
    from comfyui_genart.core.images import pil_to_tensor

    with Image.open(paths.input_dir / "a.png") as im:
        image, mask = pil_to_tensor(im)
    assert image.shape == (1, 3, 5, 3) and mask.shape == (1, 3, 5)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0
    torch.testing.assert_close(image[0, 1, 1], torch.tensor([1.0, 0.0, 0.0]))


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/genart-pwned-marker",))


def test_safety_ckpt_pickle_is_never_unpickled(tmp_path):
    from comfyui_genart.core.weights import UnsafeWeightsError, load_state_dict

    marker = __import__("pathlib").Path("/tmp/genart-pwned-marker")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "model.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": _Exploit()}}))
    with pytest.raises(UnsafeWeightsError, match="was not executed"):
        load_state_dict(evil)
    assert not marker.exists()
    good = tmp_path / "ok.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    assert torch.equal(load_state_dict(good)["w"], torch.ones(2))
    with pytest.raises(UnsafeWeightsError, match="disabled"):
        load_state_dict(good, allow_pickle=False)


def test_safety_workflow_loading_parses_json_only(tmp_path, pack):
    from comfyui_genart.graph.workflow_io import WorkflowFileError, load_workflow

    pickled = tmp_path / "wf.json"
    pickled.write_bytes(pickle.dumps({"1": _Exploit()}))
    with pytest.raises(WorkflowFileError, match="not valid JSON"):
        load_workflow(pickled, {})
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(WorkflowFileError, match="JSON object"):
        load_workflow(listed, {})
    fake = tmp_path / "image.png"
    fake.write_text("{}")
    with pytest.raises(WorkflowFileError, match=r"named \.png but is not a PNG file"):
        load_workflow(fake, {})


def test_safety_model_listing_shows_folders_once_and_files(paths):
    kind = paths.models_dirs[0] / "vqgan"
    (kind / "a-folder" / "sub").mkdir(parents=True)
    (kind / "a-folder" / "config.json").write_text("{}")
    (kind / "a-folder" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (kind / "single.safetensors").write_bytes(b"")
    (kind / "notes.txt").write_text("")
    listed = paths.list_files("models/vqgan", (".safetensors",), folders=True)
    assert {"a-folder", "single.safetensors"} <= set(listed)
    assert not [n for n in listed if n.startswith("a-folder/") or n.endswith(".txt")]
    assert paths.resolve_input("models/vqgan", "a-folder") == (kind / "a-folder").resolve()


def test_safety_pack_example_image_is_found_after_the_input_folder(paths):
    from comfyui_genart.graph.safety import PACK_INPUT_DIR

    shipped = PACK_INPUT_DIR / "genart-example-emoji.png"
    assert shipped.is_file(), "the shipped workflows load input/genart-example-emoji.png"
    assert paths.resolve_input("input", "genart-example-emoji.png") == shipped
    assert paths.list_files("input", (".png",)).count("genart-example-emoji.png") == 1
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.io import check_image_file

    [(_, missing)] = check_image_file({"image": "nope.png"}, RunContext(RunSettings(paths=paths)))
    assert f"not found in {paths.input_dir}, {PACK_INPUT_DIR}" in missing, "both folders searched are named"
    Image.new("RGB", (4, 4)).save(paths.input_dir / "genart-example-emoji.png")  # the user's own file of that name wins
    own = (paths.input_dir / "genart-example-emoji.png").resolve()
    assert paths.resolve_input("input", "genart-example-emoji.png") == own
    assert paths.list_files("input", (".png",)).count("genart-example-emoji.png") == 1


def test_written_files_get_default_permissions(tmp_path):
    # Temp files are created 0600; a saved image or model must not stay private to the writer.
    import stat

    from comfyui_genart.core.files import default_modes, share_modes
    from comfyui_genart.graph.safety import atomic_write

    FILE_MODE, DIR_MODE = default_modes()

    mask = os.umask(0o022)
    os.umask(mask)
    assert (FILE_MODE, DIR_MODE) == (0o666 & ~mask, 0o777 & ~mask)
    atomic_write(tmp_path / "a" / "image.png", b"data")
    assert stat.S_IMODE((tmp_path / "a" / "image.png").stat().st_mode) == FILE_MODE
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.safetensors").write_bytes(b"x")
    os.chmod(folder / "sub" / "weights.safetensors", 0o600)
    os.chmod(folder / "sub", 0o700)
    share_modes(folder)
    assert stat.S_IMODE((folder / "sub").stat().st_mode) == DIR_MODE
    assert stat.S_IMODE((folder / "sub" / "weights.safetensors").stat().st_mode) == FILE_MODE
