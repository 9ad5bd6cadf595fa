"""The ComfyUI frontend extension (web/genart.js), run under Node.js against stand-ins for the two
frontend modules it imports (ComfyUI serves them as shims over window.comfyAPI). Skips without `node`."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SHIM = "export const {name} = window.comfyAPI.{module}.{name};\n"

HARNESS = r"""
import assert from "node:assert/strict";
const registered = [];
globalThis.window = { comfyAPI: {
  app: { app: { registerExtension: (extension) => registered.push(extension) } },
  widgets: { ComfyWidgets: { STRING(node, name, spec) {
    assert.deepEqual(spec, ["STRING", { multiline: true }]);
    const widget = { name, value: "", options: {}, element: { readOnly: false, style: {} } };
    node.widgets.push(widget);
    return { widget };
  } } },
} };
const module = await import(process.argv[2]);
assert.equal(registered.length, 1, "the extension registers once");
const extension = registered[0];

class Node {
  constructor() {
    this.widgets = [{ name: "filename_prefix", value: "genart/report" }];
    this.seen = [];
    this.size = [300, 200];
  }
  setSize(size) { this.size = size; }
  onExecuted(message) { this.seen.push(message); }
}
class Other { onExecuted() {} }
const otherExecuted = Other.prototype.onExecuted;
await extension.beforeRegisterNodeDef(Node, { name: "GenArtMetricsReport" });
await extension.beforeRegisterNodeDef(Other, { name: "KSampler" });
assert.equal(Other.prototype.onExecuted, otherExecuted, "other packs' nodes are left alone");

const node = new Node();
node.onExecuted({ files: [] });
assert.equal(node.widgets.length, 1, "no text, no box");
node.onExecuted({ text: ["label                       latent_l2  latent_cosine  perturbation_linf", "second"] });
assert.equal(node.seen.length, 2, "the node's own onExecuted still runs");
const box = node.widgets.find((w) => w.name === module.REPORT_WIDGET);
assert.equal(box.value, "label                       latent_l2  latent_cosine  perturbation_linf\n\nsecond");
assert.equal(box.element.readOnly, true);
assert.equal(box.element.style.fontFamily, "monospace");
assert.ok(node.size[0] > 300 && node.size[1] > 200, "the node grows to show the table once");
const grown = [...node.size];
node.onExecuted({ text: ["rerun"] });
assert.deepEqual(node.size, grown, "later runs keep the size the user may have set");
assert.equal(node.widgets.length, 2, "one box, reused");
assert.equal(box.value, "rerun");
// The frontend's rules: widgets_values skips `serialize === false`; the prompt skips `options.serialize === false`.
assert.deepEqual(node.widgets.filter((w) => w.serialize !== false).map((w) => w.value), ["genart/report"]);
assert.deepEqual(node.widgets.filter((w) => w.options?.serialize !== false).map((w) => w.name), ["filename_prefix"]);
console.log("ok");
"""


def test_web_extension_shows_reported_text_and_stays_out_of_the_workflow(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    # The layout ComfyUI serves: /scripts/*.js shims and /extensions/<pack>/genart.js.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(SHIM.format(name="app", module="app"))
    (tmp_path / "scripts" / "widgets.js").write_text(SHIM.format(name="ComfyWidgets", module="widgets"))
    extension = tmp_path / "extensions" / "ComfyUI-GenArt" / "genart.js"
    extension.parent.mkdir(parents=True)
    shutil.copy(REPO / "web" / "genart.js", extension)
    (tmp_path / "harness.mjs").write_text(HARNESS)
    done = subprocess.run([node, str(tmp_path / "harness.mjs"), extension.as_uri()], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr or done.stdout


def test_pack_serves_its_web_folder() -> None:
    import comfyui_genart

    assert comfyui_genart.WEB_DIRECTORY == "./web"
    assert (REPO / "web" / "genart.js").is_file()
