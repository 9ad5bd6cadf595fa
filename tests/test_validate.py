"""Validation collects every problem in ComfyUI's error shape before anything runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def errors_of(make_executor, prompt):
    from comfyui_genart.graph.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as info:
        make_executor().validate(prompt)
    return info.value.to_json()


def only_error(body, node_id):
    (err,) = body["node_errors"][node_id]["errors"]
    return err


def sink(src: str) -> dict:
    return {"class_type": "GenArtTestSink", "inputs": {"value": [src, 0]}}


@pytest.mark.parametrize(("value", "kind", "message"), [
    (500, "value_bigger_than_max", "Value 500 bigger than max of 100"),
    (-500, "value_smaller_than_min", "Value -500 smaller than min of -100"),
    ("abc", "invalid_input_type", "Failed to convert an input value to the expected type"),
])
def test_validate_constant_errors_name_input_and_value(make_executor, value, kind, message):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtTestNumber", "inputs": {"value": value}},
                                     "2": sink("1")})
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["class_type"] == "GenArtTestNumber"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]
    err = only_error(body, "1")
    assert err["type"] == kind and err["message"].startswith(message)
    assert err["extra_info"]["input_name"] == "value"
    assert err["extra_info"]["received_value"] == value
    assert err["extra_info"]["input_config"][0] == "FLOAT"


def test_validate_value_not_in_list(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtPatternImage", "inputs": {"pattern": "zigzag"}},
                                     "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}})
    err = only_error(body, "1")
    assert err["type"] == "value_not_in_list"
    assert "'zigzag'" in err["message"] and "checkerboard" in err["message"]


def test_validate_required_input_missing(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtTestAdd", "inputs": {"b": 1.0}}, "2": sink("1")})
    err = only_error(body, "1")
    assert err["type"] == "required_input_missing" and err["extra_info"]["input_name"] == "a"


def test_validate_link_to_missing_node_and_bad_output_index(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtTestNumber", "inputs": {}},
                                     "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 3]}},
                                     "3": {"class_type": "GenArtTestAdd", "inputs": {"a": ["42", 0]}},
                                     "4": sink("2"), "5": sink("3")})
    assert only_error(body, "2")["type"] == "bad_linked_input"
    assert "output 3 of node 1" in only_error(body, "2")["message"]
    assert only_error(body, "3")["type"] == "bad_linked_input"
    assert "'42'" in only_error(body, "3")["message"]


def test_validate_socket_type_mismatch(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtPatternImage", "inputs": {}},
                                     "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0]}},
                                     "3": sink("2")})
    err = only_error(body, "2")
    assert err["type"] == "return_type_mismatch"
    assert "received_type(IMAGE) mismatch input_type(FLOAT)" in err["message"]


def test_validate_unknown_class_type_and_unknown_input(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "KSamplerXYZ", "inputs": {}},
                                     "2": {"class_type": "GenArtTestNumber", "inputs": {"valu": 1}},
                                     "3": sink("2")})
    assert only_error(body, "1")["type"] == "missing_node_type"
    assert "KSamplerXYZ" in only_error(body, "1")["message"]
    assert only_error(body, "2")["type"] == "invalid_input_name"


def test_validate_collects_every_problem_at_once(make_executor):
    body = errors_of(make_executor, {
        "1": {"class_type": "GenArtTestNumber", "inputs": {"value": 1000}},
        "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0], "b": "x"}},
        "3": {"class_type": "GenArtTestAdd", "inputs": {}},
        "4": sink("2"), "5": sink("3")})
    kinds = {nid: [e["type"] for e in entry["errors"]] for nid, entry in body["node_errors"].items()}
    assert kinds == {"1": ["value_bigger_than_max"], "2": ["invalid_input_type"], "3": ["required_input_missing"]}


def test_validate_cycle_names_its_nodes(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtTestAdd", "inputs": {"a": ["3", 0]}},
                                     "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0]}},
                                     "3": {"class_type": "GenArtTestAdd", "inputs": {"a": ["2", 0]}},
                                     "4": sink("3")})
    assert body["error"]["type"] == "dependency_cycle"
    for node_id in "123":
        assert node_id in body["error"]["details"]
        assert only_error(body, node_id)["type"] == "dependency_cycle"
    assert "4 (" not in body["error"]["details"]


def test_validate_no_output_node(make_executor):
    body = errors_of(make_executor, {"1": {"class_type": "GenArtTestNumber", "inputs": {}}})
    assert body["error"]["type"] == "prompt_no_outputs"


def test_validate_nodes_not_feeding_outputs_are_ignored(make_executor):
    plan = make_executor().validate({"1": {"class_type": "GenArtTestNumber", "inputs": {}}, "2": sink("1"),
                                     "3": {"class_type": "GenArtTestAdd", "inputs": {"b": 1.0}}})
    assert sorted(plan.order) == ["1", "2"]


def test_validate_oversized_dimensions_refused(make_executor):
    body = errors_of(make_executor, {
        "1": {"class_type": "GenArtPatternImage", "inputs": {"width": 100000}},
        "2": {"class_type": "GenArtPatternImage", "inputs": {"width": 8192, "height": 8192}},
        "3": {"class_type": "GenArtPatternImage", "inputs": {"width": 2048, "height": 2048, "batch_size": 256}},
        "4": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}},
        "5": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["2", 0]}},
        "6": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["3", 0]}}})
    assert only_error(body, "1")["type"] == "value_bigger_than_max"
    assert "pixels exceeds the limit" in only_error(body, "2")["message"]
    assert only_error(body, "3")["extra_info"]["input_name"] == "batch_size"


def test_validate_cli_exit_code_2_and_report(tmp_path):
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps({"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 0}},
                              "2": {"class_type": "GenArtSaveImage", "inputs": {"images": ["1", 0]}}}))
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "graph.run", str(wf), "--report", str(report),
                           "--output-dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "node 1 (GenArtPatternImage), input 'width' = 0: Value 0 smaller than min of 1" in proc.stderr
    body = json.loads(report.read_text())
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert not (tmp_path / "out").exists()


def test_validate_exclusive_bounds_say_they_are_exclusive():
    from pydantic import BaseModel, Field, ValidationError

    from comfyui_genart.graph.spec import describe_validation_error

    class Betas(BaseModel):
        beta: float = Field(0.5, gt=0.0, lt=1.0)

    for value, kind, message in ((0.0, "value_smaller_than_min", "Value 0.0 must be greater than 0.0"),
                                 (1.0, "value_bigger_than_max", "Value 1.0 must be less than 1.0")):
        with pytest.raises(ValidationError) as err:
            Betas(beta=value)
        assert describe_validation_error(err.value)[:2] == (kind, message)
