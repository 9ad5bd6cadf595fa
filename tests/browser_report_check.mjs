// Drives ComfyUI's real frontend in headless Chromium (tests/test_comfyui_live.py runs it): loads a
// workflow, queues it, waits for the GenArt report node's box (web/genart.js) and prints what it holds,
// how the node serializes and which inputs the prompt sends, as JSON.
//   node browser_report_check.mjs SERVER_URL WORKFLOW.json CHROMIUM SCREENSHOT.png
// puppeteer-core is loaded from $GENART_NODE_MODULES (a node_modules folder).
import { createRequire } from "node:module";
import fs from "node:fs";

const [url, workflowPath, chromium, screenshot] = process.argv.slice(2);
const require = createRequire(`${process.env.GENART_NODE_MODULES}/`);
const puppeteer = require("puppeteer-core");
const workflow = JSON.parse(fs.readFileSync(workflowPath, "utf8"));
const reportId = workflow.nodes.find((n) => n.type === "GenArtMetricsReport").id;

const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.setViewport({ width: 1600, height: 1000 });
  await page.goto(url, { waitUntil: "networkidle0", timeout: 120000 });
  await page.waitForFunction(() => window.app?.graph, { timeout: 120000 });
  await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, workflow);
  const before = await page.evaluate((id) => window.app.graph.getNodeById(id).widgets.map((w) => w.name), reportId);
  await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
  await page.waitForFunction((id) => window.app.graph.getNodeById(id).widgets?.some(
    (w) => w.name === "genart_report" && w.value), { timeout: 300000, polling: 500 }, reportId);
  const after = await page.evaluate((id) => {
    const node = window.app.graph.getNodeById(id);
    const box = node.widgets.find((w) => w.name === "genart_report");
    const el = box.element ?? box.inputEl;
    return { text: box.value, readOnly: el?.readOnly ?? null, shown: !!(el && document.body.contains(el)),
             width: node.size[0], widgetsValues: node.serialize().widgets_values };
  }, reportId);
  const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  await page.keyboard.press("Escape");  // the first-run templates dialog
  await page.evaluate((id) => {
    const canvas = window.app.canvas;
    canvas.ds.scale = 1.2;
    canvas.centerOnNode(window.app.graph.getNodeById(id));
    canvas.setDirty(true, true);
  }, reportId);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ before, after, promptInputs: Object.keys(prompt[String(reportId)].inputs), errors }));
} finally {
  await browser.close();
}
