"""Workflow files come from strangers: every odd thing a file can carry is refused with a typed error in ComfyUI's
shape (exit code 2 headless) that names the node, the input, the value and what is allowed. The user's own
symlinks in their input and model folders are followed; names from the workflow stay confined.

tests/test_fuzz.py searches for more of the same; the cases here are the ones it (or issue 17) found, written out.
"""
from __future__ import annotations

import json
import math
import os

import pytest
from PIL import Image

from conftest import REPO, emoji_like_folder


def case_id(value) -> str | None:
    """pytest ids for values it cannot print (ints of more than 4300 digits)."""
    if isinstance(value, int) and abs(value) > 1 << 64:
        return f"int{value.bit_length()}bits"
    if isinstance(value, list):
        return "-".join(case_id(v) or repr(v) for v in value)
    return None


def invalid(executor, prompt) -> dict:
    from comfyui_genart.graph.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as info:
        executor.validate(prompt)
    json.dumps(info.value.to_json())  # the body ComfyUI would answer with is JSON
    info.value.summary()
    return info.value.to_json()


def only(body: dict, node_id: str) -> dict:
    (err,) = body["node_errors"][node_id]["errors"]
    return err


def load_image(name: str) -> dict:
    return {"1": {"class_type": "GenArtLoadImage", "inputs": {"image": name}},
            "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}}


def cli(capsys, *args: str) -> tuple[int, str]:
    """The headless runner in this process: (exit code, standard error)."""
    from comfyui_genart.graph.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def ui_pattern_to_preview(link: list, slot_link) -> dict:
    """A UI-format workflow: a pattern node linked to a preview node."""
    return {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "links": [link], "nodes": [
        {"id": 1, "type": "GenArtPatternImage", "mode": 0, "order": 0, "inputs": [],
         "outputs": [{"name": "image", "type": "IMAGE", "links": [1]}],
         "widgets_values": ["checkerboard", 16, 16, 1, 4, 0.9, 0.5, 0.1]},
        {"id": 2, "type": "GenArtPreviewImage", "mode": 0, "order": 1,
         "inputs": [{"name": "images", "type": "IMAGE", "link": slot_link}], "outputs": [], "widgets_values": []}]}


@pytest.fixture(scope="module")
def info(pack):
    from comfyui_genart.graph.comfy import object_info

    return object_info(pack.REGISTRY)


# -- the four examples of issue 17 -------------------------------------------------------------------------------


def test_hardening_nul_byte_in_a_file_name_is_refused_at_validation(make_executor):
    err = only(invalid(make_executor(), load_image("a\x00b.png")), "1")
    assert err["type"] == "custom_validation_failed"
    assert err["extra_info"]["input_name"] == "image" and err["extra_info"]["received_value"] == "a\x00b.png"
    assert err["message"] == ("input file 'a\\x00b.png' is refused: it contains a NUL byte (\\x00), which no file "
                              "name may hold")


def test_hardening_file_name_longer_than_the_file_system_allows_is_refused(make_executor):
    name = "x" * 300 + ".png"
    err = only(invalid(make_executor(), load_image(name)), "1")
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["received_value"] == name
    assert err["message"] == (f"input file {repr(name)[:120]}... (304 characters) is refused: a name in it is 304 "
                              "bytes long, longer than the 255 bytes a file system allows")
    whole = "/".join(["d" * 200] * 21)  # every part fits, the path does not
    err = only(invalid(make_executor(), load_image(whole)), "1")
    assert "is refused: it is 4220 bytes long, longer than the 4095 bytes a path may be" in err["message"]


def test_hardening_save_node_whose_filename_prefix_comes_from_a_link(make_executor, paths):
    """The save node's check read constants["filename_prefix"], which a linked prefix is not among: a KeyError.
    Now the check waits for the value, and the node refuses a bad one when it arrives."""
    from comfyui_genart.graph.errors import NodeExecutionError

    (paths.input_dir / "prefix.txt").write_text("../escape")
    prompt = {"1": {"class_type": "GenArtTestReadText", "inputs": {"name": "prefix.txt"}},
              "2": {"class_type": "GenArtPatternImage", "inputs": {"width": 8, "height": 8}},
              "3": {"class_type": "GenArtSaveImage", "inputs": {"images": ["2", 0], "filename_prefix": ["1", 0]}}}
    make_executor().validate(prompt)
    with pytest.raises(NodeExecutionError) as info:
        make_executor().run(prompt)
    assert str(info.value) == ("node 3 (GenArtSaveImage) failed: UnsafePathError: filename_prefix '../escape' "
                               "contains '..' or '.'; outputs stay inside the output folder")
    assert not any(paths.output_dir.rglob("*.png")) and not (paths.output_dir.parent / "escape_00001_.png").exists()
    (paths.input_dir / "prefix.txt").write_text("from/a/file")
    assert make_executor().run(prompt).ui["3"]["images"][0]["subfolder"] == "from/a"


def test_hardening_save_node_without_filename_prefix(make_executor, paths, info, capsys, tmp_path):
    """Left out of an API prompt: the default; left out of a UI file's widgets_values: a conversion error."""
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 8, "height": 8}},
              "2": {"class_type": "GenArtSaveImage", "inputs": {"images": ["1", 0]}}}
    assert make_executor().run(prompt).ui["2"]["images"][0]["filename"] == "GenArt_00001_.png"
    workflow = ui_pattern_to_preview([1, 1, 0, 2, 0, "IMAGE"], 1)
    workflow["nodes"][1].update(type="GenArtSaveImage", widgets_values=[])
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(workflow))
    code, err = cli(capsys, path, "--validate-only", "--output-dir", tmp_path / "out")
    assert code == 2
    assert err == ("error: node 2 (GenArtSaveImage): widgets_values [] has no value for required widget(s) "
                   "filename_prefix, embed_workflow; widget order: filename_prefix, embed_workflow\n")


@pytest.mark.parametrize(("link", "slot_link", "message"), [
    ([math.inf, 1, 0, 2, 0, "IMAGE"], 1,
     "workflow: malformed link [inf, 1, 0, 2, 0, 'IMAGE'] (link id must be a whole number or a string, got inf)"),
    ([1, 1, math.inf, 2, 0, "IMAGE"], 1,
     "workflow: malformed link [1, 1, inf, 2, 0, 'IMAGE'] (slot inf is not a slot index (a whole number))"),
    ([1, 1, 0, 2, 0, "IMAGE"], math.inf,
     "node 2 (GenArtPreviewImage) input 'images': link inf is not in workflow's links"),
    ([1, 1, 0, 2, 0, "IMAGE"], math.nan,
     "node 2 (GenArtPreviewImage) input 'images': link nan is not in workflow's links"),
])
def test_hardening_ui_link_with_an_infinite_float(info, capsys, tmp_path, link, slot_link, message):
    from comfyui_genart.graph.ui_format import UIConversionError, ui_to_api

    workflow = ui_pattern_to_preview(link, slot_link)
    with pytest.raises(UIConversionError) as err:
        ui_to_api(workflow, info)
    assert str(err.value) == message
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(workflow))  # Python writes Infinity/NaN, which JSON readers (and ours) accept
    assert cli(capsys, path, "--validate-only") == (2, f"error: {message}\n")


# -- symlinks: the user's own are followed, names from the workflow stay inside -----------------------------------


def test_hardening_model_folder_symlinked_into_models_kind_loads(pack, paths, tmp_path):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    other_disk = tmp_path / "other-disk" / "my-vq"
    other_disk.parent.mkdir()
    other_disk.symlink_to(REPO / "models" / "vqgan" / "genart-emoji32", target_is_directory=True)
    (paths.models_dirs[0] / "vqgan").mkdir()
    (paths.models_dirs[0] / "vqgan" / "linked-vq").symlink_to(other_disk, target_is_directory=True)
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32}},
              "2": {"class_type": "GenArtLoadVQModel", "inputs": {"model_name": "linked-vq", "device": "cpu"}},
              "3": {"class_type": "GenArtEncodeVQ", "inputs": {"vqmodel": ["2", 0], "image": ["1", 0]}},
              "4": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["2", 0], "latent": ["3", 0]}},
              "5": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["4", 0]}}}
    executor = Executor(pack.REGISTRY, RunSettings(paths=paths))
    report = executor.run(prompt, keep=["4"])
    assert tuple(report.outputs["4"]["image"].shape) == (1, 32, 32, 3)
    assert "linked-vq" in paths.list_files("models/vqgan", folders=True)


def test_hardening_dataset_folder_and_image_symlinked_into_input_are_followed(pack, make_executor, paths, tmp_path):
    emoji_like_folder(tmp_path / "datasets" / "emoji", count=6)
    (paths.input_dir / "emoji").symlink_to(tmp_path / "datasets" / "emoji", target_is_directory=True)
    (paths.input_dir / "cat.png").symlink_to(tmp_path / "datasets" / "emoji" / "e00.png")
    executor = make_executor()
    executor.validate({"1": {"class_type": "GenArtLoadImageFolder", "inputs": {"folder": "emoji"}},
                       "2": {"class_type": "GenArtTrainVQGAN", "inputs": {"dataset": ["1", 0]}}})
    for name in ("cat.png", "emoji/e01.png"):
        report = executor.run(load_image(name), keep=["1"])
        assert tuple(report.outputs["1"]["image"].shape) == (1, 16, 16, 3)


@pytest.mark.parametrize(("name", "why"), [
    ("../secret.png", "it contains '..'"),
    ("linked/../../secret.png", "it contains '..'"),
    ("linked/../x.png", "it contains '..'"),
    ("..\\secret.png", "it contains '..'"),
    ("/etc/passwd", "it is an absolute path"),
    ("\\\\server\\share\\x.png", "it is an absolute path"),
    ("C:\\Windows\\win.ini", "it is an absolute path"),
])
def test_hardening_names_with_dotdot_or_absolute_stay_refused_beside_links(make_executor, paths, tmp_path, name, why):
    """A link in the input folder is followed, but a name that climbs out (through it or not) is still refused,
    and the message says what was refused and why."""
    (tmp_path / "outside").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (paths.input_dir / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    err = only(invalid(make_executor(), load_image(name)), "1")
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["received_value"] == name
    assert err["message"].startswith(f"input file {name!r} is refused: {why}")
    assert str(paths.input_dir) in err["message"]
    assert "may not climb out" not in err["message"]


def test_hardening_model_name_with_dotdot_is_refused_with_its_reason(pack, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    executor = Executor(pack.REGISTRY, RunSettings(paths=paths))
    prompt = {"1": {"class_type": "GenArtLoadVQModel", "inputs": {"model_name": "../unet/genart-emoji32"}},
              "2": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["1", 0], "latent": ["3", 0]}},
              "3": {"class_type": "GenArtEmptyLatent", "inputs": {}},
              "4": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["2", 0]}}}
    body = invalid(executor, prompt)
    err = only(body, "1")
    assert err["message"].startswith("model '../unet/genart-emoji32' is refused: it contains '..', and names from a "
                                     f"workflow stay inside {paths.models_dirs[0] / 'vqgan'}")


# -- numbers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "message"), [
    ("red", math.nan, "Value nan is refused: the number is not finite (NaN or infinity); red takes a FLOAT (a finite "
                      "number) from 0.0 to 1.0"),
    ("red", "-inf", "Value '-inf' is refused: the number is not finite (NaN or infinity); red takes a FLOAT (a finite "
                    "number) from 0.0 to 1.0"),
    ("red", True, "Value True is refused: a boolean is not a number; red takes a FLOAT (a finite number) from 0.0 "
                  "to 1.0"),
    ("width", False, "Value False is refused: a boolean is not a number; width takes an INT (a whole number) from 1 "
                     "to 8192"),
    ("width", 2**70, "Value 1180591620717411303424 is refused: the number does not fit in 64 bits; width takes an "
                     "INT (a whole number) from 1 to 8192"),
    ("width", math.inf, "Value inf is refused: Input should be a finite number; width takes an INT (a whole number) "
                        "from 1 to 8192"),
    ("width", 10**5000, "Value <int of 16610 bits> is refused: the number does not fit in 64 bits; width takes an "
                        "INT (a whole number) from 1 to 8192"),
    ("width", "wide", "Failed to convert an input value to the expected type: Input should be a valid integer, "
                      "unable to parse string as an integer; width takes an INT (a whole number) from 1 to 8192"),
], ids=case_id)
def test_hardening_numbers_nan_inf_bools_and_wide_ints_are_refused(make_executor, name, value, message):
    body = invalid(make_executor(), {"1": {"class_type": "GenArtPatternImage", "inputs": {name: value}},
                                     "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}})
    err = only(body, "1")
    assert err["type"] == "invalid_input_type" and err["extra_info"]["input_name"] == name
    assert err["message"] == message


def test_hardening_long_values_are_quoted_short_in_the_summary(make_executor):
    from comfyui_genart.graph.errors import WorkflowInvalid

    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"pattern": "z" * 1_000_000, "x" * 5000: 1}},
              "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        make_executor().validate(prompt)
    assert len(info.value.summary()) < 2000
    body = {e["type"]: e for e in info.value.to_json()["node_errors"]["1"]["errors"]}
    assert set(body) == {"value_not_in_list", "invalid_input_name"}
    assert body["value_not_in_list"]["extra_info"]["received_value"] == "z" * 1_000_000  # the JSON body has it whole
    message = body["value_not_in_list"]["message"]
    assert message.startswith(f"Value not in list: '{'z' * 119}... (1000000 characters) not in")


# -- structure: ids, links, inputs -------------------------------------------------------------------------------


def test_hardening_an_id_given_as_int_and_as_string_is_refused(make_executor):
    prompt = load_image("genart-example-emoji.png")
    prompt[1] = prompt["1"]
    err = only(invalid(make_executor(), prompt), "1")
    assert err["type"] == "invalid_prompt"
    assert err["message"] == "Node id '1' is given 2 times (as '1', 1); each node needs its own id"


@pytest.mark.parametrize(("link", "kind"), [
    ([True, 0], "invalid_input_type"), (["1", True], "invalid_input_type"), (["1", 2**70], "invalid_input_type"),
    (["1", 10**5000], "invalid_input_type"), ([10**5000, 0], "invalid_input_type"), (["1", 0.0], "invalid_input_type"),
    (["1", 7], "bad_linked_input"), (["1", -1], "bad_linked_input"), (["9", 0], "bad_linked_input"),
    ([1, 0], None),
], ids=case_id)
def test_hardening_malformed_links_are_typed_errors(make_executor, link, kind):
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {}},
              "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": link}}}
    if kind is None:
        make_executor().validate(prompt)
        return
    err = only(invalid(make_executor(), prompt), "2")
    assert err["type"] == kind and err["extra_info"]["input_name"] == "images"


def test_hardening_inputs_that_are_no_object_are_a_validation_error_after_overrides(make_executor):
    from comfyui_genart.graph.workflow_io import apply_overrides

    for inputs in ([1, 2], "abc", 5, None):
        prompt = apply_overrides({"1": {"class_type": "GenArtPatternImage", "inputs": inputs},
                                  "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}}, [])
        err = only(invalid(make_executor(), prompt), "1")
        assert err["type"] == "invalid_prompt" and err["message"].startswith("'inputs' must be an object")


def test_hardening_a_check_that_raises_is_comfyui_exception_during_validation(pack, paths):
    from pydantic import Field

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.graph.node import Node, NodeOutputs
    from comfyui_genart.graph.registry import Registry

    class Broken(Node):
        """A node whose own check has a bug."""

        CLASS_TYPE = "GenArtTestBrokenCheck"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        size: int = Field(1, description="a number")

        @classmethod
        def check_constants(cls, constants, ctx):
            return [("size", str(1 / (constants["size"] - 1)))]

        def run(self, ctx):
            return self.Outputs()

    registry = Registry()
    registry.register(Broken)
    err = only(invalid(Executor(registry, RunSettings(paths=paths)),
                       {"7": {"class_type": "GenArtTestBrokenCheck", "inputs": {}}}), "7")
    assert err["type"] == "exception_during_validation"
    assert err["message"] == "Exception when validating node: ZeroDivisionError: division by zero"
    assert err["extra_info"]["exception_type"] == "builtins.ZeroDivisionError" and err["extra_info"]["traceback"]


# -- files: JSON and PNG -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b'{"1": {"class_type": "GenArtPatternImage", "inputs": {}}, "1": {"class_type": "GenArtPreviewImage"}}',
     "the object gives the key(s) '1' more than once; JSON keeps only the last of each"),
    (b"[" * 100_000 + b"]" * 100_000, "nests JSON arrays or objects too deep to be a workflow"),
    (b'{"1": {"class_type": "GenArtPatternImage", "inputs": {"width": ' + b"9" * 5000 + b"}}}",
     "is not a workflow: Exceeds the limit (4300 digits) for integer string conversion"),
    ("{\"1\": \"é\"}".encode("utf-16"), "is not valid JSON: it is not UTF-8 text"),
    (b'{"1": ', "is not valid JSON: Expecting value: line 1 column 7 (char 6)"),
    (b"", "is not valid JSON"),
])
def test_hardening_json_files_that_are_no_workflow(capsys, tmp_path, content, message):
    path = tmp_path / "w.json"
    path.write_bytes(content)
    code, err = cli(capsys, path, "--validate-only")
    assert code == 2 and message in err, err


def test_hardening_json_file_with_byte_order_mark_loads(capsys, tmp_path):
    path = tmp_path / "w.json"
    path.write_bytes(b"\xef\xbb\xbf" + (REPO / "workflows" / "api" / "image-utilities.json").read_bytes())
    code, _ = cli(capsys, path, "--validate-only")
    assert code == 0


@pytest.mark.parametrize(("texts", "message"), [
    ({"prompt": "{not json"}, "the 'prompt' text chunk of"),
    ({"prompt": "[1, 2]"}, "holds a JSON list; a workflow is a JSON object"),
    ({"workflow": "null"}, "holds a JSON NoneType; a workflow is a JSON object"),
    ({"workflow": json.dumps({"nodes": 5, "links": []})}, "not a UI-format workflow"),
    ({"other": "x"}, "is a PNG without 'prompt' or 'workflow' text chunks"),
])
def test_hardening_png_chunks_that_are_no_workflow(capsys, tmp_path, texts, message):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    path = tmp_path / "w.png"
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)
    code, err = cli(capsys, path, "--validate-only")
    assert code == 2 and message in err, err


def test_hardening_corrupt_png_and_unreadable_paths(capsys, tmp_path):
    path = tmp_path / "w.png"
    Image.new("RGB", (2, 2)).save(path)
    path.write_bytes(path.read_bytes()[:30])
    code, err = cli(capsys, path, "--validate-only")
    assert code == 2 and "is a PNG that cannot be read" in err
    code, err = cli(capsys, "a\x00b.json", "--validate-only")
    assert (code, err) == (2, "error: workflow file 'a\\x00b.json' does not exist\n")
    code, err = cli(capsys, tmp_path, "--validate-only")
    assert code == 2 and "does not exist (it is a folder)" in err
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        assert cli(capsys, locked, "--validate-only")[0] == 2


# -- UI structures -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda w: w["nodes"][1]["inputs"][0].update(name=["images"]),
     "node 2 (GenArtPreviewImage): 'inputs' must be a list of slots, each with a name (text)"),
    (lambda w: w["nodes"][0].update(id=1.5), "workflow: node (GenArtPatternImage) id must be a whole number or a "
                                             "string, got 1.5"),
    (lambda w: w["nodes"][0].update(id=True), "workflow: node (GenArtPatternImage) id must be a whole number or a "
                                              "string, got True"),
    (lambda w: w["nodes"].append(dict(w["nodes"][0])), "workflow: node id 1 is used twice"),
    (lambda w: w.update(definitions={"subgraphs": 5}), "definitions.subgraphs must be a list, got int"),
    (lambda w: w["links"].append("x"), "workflow: malformed link 'x' (a link is a list or an object, not str)"),
    (lambda w: w["links"].append([2, 1, True, 2, 0]), "workflow: malformed link [2, 1, True, 2, 0] (slot True is a "
                                                      "boolean, not a slot index)"),
    (lambda w: w["links"].append([2, 1]), "workflow: malformed link [2, 1] (2 fields; a link is [id, origin_id, "
                                          "origin_slot, target_id, target_slot, type])"),
])
def test_hardening_malformed_ui_structures(info, change, message):
    from comfyui_genart.graph.ui_format import UIConversionError, ui_to_api

    workflow = ui_pattern_to_preview([1, 1, 0, 2, 0, "IMAGE"], 1)
    change(workflow)
    with pytest.raises(UIConversionError) as err:
        ui_to_api(workflow, info)
    assert str(err.value) == message


def test_hardening_ui_bypassed_node_with_odd_outputs_converts(info):
    from comfyui_genart.graph.ui_format import ui_to_api

    workflow = ui_pattern_to_preview([1, 1, 0, 2, 0, "IMAGE"], 1)
    workflow["nodes"].insert(1, {"id": 3, "type": "GenArtResizeImage", "mode": 4, "inputs": [
        {"name": "image", "type": "IMAGE", "link": 1}], "outputs": ["odd"], "widgets_values": [8, 8, "area"]})
    workflow["links"] = [[1, 1, 0, 3, 0, "IMAGE"], [2, 3, 0, 2, 0, "IMAGE"]]
    workflow["nodes"][2]["inputs"][0]["link"] = 2
    assert ui_to_api(workflow, info)["2"]["inputs"]["images"] == ["1", 0]


def test_hardening_long_reroute_chain_is_a_conversion_error(info):
    from comfyui_genart.graph.ui_format import UIConversionError, ui_to_api

    workflow = ui_pattern_to_preview([1, 1, 0, 100, 0, "IMAGE"], 5000)
    workflow["links"] += [[100 + i, 100 + i, 0, 101 + i, 0, "IMAGE"] for i in range(4900)]
    workflow["links"].append([5000, 5000, 0, 2, 0, "IMAGE"])
    workflow["nodes"] += [{"id": 100 + i, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1 if i == 0
                                                                         else 99 + i}], "outputs": []}
                          for i in range(4901)]
    with pytest.raises(UIConversionError, match="nests too deep"):
        ui_to_api(workflow, info)
