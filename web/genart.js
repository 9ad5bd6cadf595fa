// Shows the text a GenArt node reports when it runs (a metrics report's table, a training summary) in a
// read-only box on the node. ComfyUI's own frontend shows an executed message's `text` only for its
// Preview Any node, so without this the table would reach the browser and never be seen.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

export const REPORT_WIDGET = "genart_report";

// A new report box on `node`. It is display only: never saved in the workflow's widgets_values, never sent
// as an input in the prompt (both would shift or add inputs).
function addReportWidget(node) {
  const widget = ComfyWidgets.STRING(node, REPORT_WIDGET, ["STRING", { multiline: true }], app).widget;
  widget.serialize = false;
  widget.options = { ...(widget.options ?? {}), serialize: false };
  const box = widget.element ?? widget.inputEl;
  if (box) {
    box.readOnly = true;
    // The tables are aligned with spaces.
    if (box.style) Object.assign(box.style, { fontFamily: "monospace", whiteSpace: "pre", overflowX: "auto" });
  }
  return widget;
}

// Room for a report when its box first appears (later the user's own sizing is kept): wide enough for the
// longest line of the table, tall enough for about 16 lines of it.
const CHAR_WIDTH = 7.5;
const LINE_HEIGHT = 14;
const MAX_WIDTH = 960;

function makeRoom(node, text) {
  if (!node.size || !node.setSize) return;
  const lines = text.split("\n");
  const longest = Math.max(...lines.map((line) => line.length));
  const width = Math.min(MAX_WIDTH, Math.max(node.size[0], longest * CHAR_WIDTH + 40));
  node.setSize([width, node.size[1] + Math.min(lines.length, 16) * LINE_HEIGHT]);
}

export function showReport(node, message) {
  const text = message?.text;
  if (!Array.isArray(text) || text.length === 0) return;
  const value = text.join("\n\n");
  const existing = node.widgets?.find((w) => w.name === REPORT_WIDGET);
  (existing ?? addReportWidget(node)).value = value;
  if (!existing) makeRoom(node, value);
  node.setDirtyCanvas?.(true, true);
}

export const extension = {
  name: "GenArt.ShowReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("GenArt")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      showReport(this, message);
    };
  },
};

app.registerExtension(extension);
