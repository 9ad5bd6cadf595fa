// Opens a workflow in ComfyUI's own frontend (headless Chromium) and saves a picture of the whole graph,
// for the README. Nothing is queued: the picture shows the workflow as a user opens it.
//   node tools/screenshot_workflow.mjs SERVER_URL WORKFLOW.json CHROMIUM OUT.png [WIDTH HEIGHT]
// puppeteer-core is loaded from $GENART_NODE_MODULES (a node_modules folder); the server must list the
// workflow's models and input images, or the frontend draws them as missing.
import { createRequire } from "node:module";
import fs from "node:fs";

const [url, workflowPath, chromium, out, width = "1800", height = "1000"] = process.argv.slice(2);
const require = createRequire(`${process.env.GENART_NODE_MODULES}/`);
const puppeteer = require("puppeteer-core");
const workflow = JSON.parse(fs.readFileSync(workflowPath, "utf8"));

const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.setViewport({ width: Number(width), height: Number(height), deviceScaleFactor: 2 });
  await page.goto(url, { waitUntil: "networkidle0", timeout: 120000 });
  await page.waitForFunction(() => window.app?.graph, { timeout: 120000 });
  await page.evaluate(async () => {
    const settings = window.app.extensionManager.setting;
    await settings.set("LiteGraph.Canvas.MinFontSizeForLOD", 0); // draw titles and widgets however small
    await settings.set("Comfy.Minimap.Visible", false);
    await settings.set("Comfy.Graph.CanvasInfo", false);
  });
  await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, workflow);
  await new Promise((resolve) => setTimeout(resolve, 3000)); // image previews load
  await page.keyboard.press("Escape"); // the first-run templates dialog
  // Fit every node into the canvas: LiteGraph draws a graph point p at (p + offset) * scale.
  const fitted = await page.evaluate(() => {
    const canvas = window.app.canvas;
    const nodes = window.app.graph._nodes;
    const title = 30;
    const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]);
    const ys = nodes.flatMap((n) => [n.pos[1] - title, n.pos[1] + n.size[1]]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const el = canvas.canvas;
    const scale = Math.min(el.clientWidth / (x1 - x0), el.clientHeight / (y1 - y0)) * 0.96;
    canvas.ds.scale = scale;
    canvas.ds.offset = [(el.clientWidth / scale - (x1 - x0)) / 2 - x0, (el.clientHeight / scale - (y1 - y0)) / 2 - y0];
    canvas.setDirty(true, true);
    const box = el.getBoundingClientRect(); // the picture: the graph's own rectangle, none of the page around it
    const pad = 12;
    const clip = { x: box.left + (x0 + canvas.ds.offset[0]) * scale - pad, y: box.top + (y0 + canvas.ds.offset[1]) * scale - pad,
                   width: (x1 - x0) * scale + 2 * pad, height: (y1 - y0) * scale + 2 * pad };
    return { nodes: nodes.length, scale, clip };
  });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await page.screenshot({ path: out, clip: fitted.clip });
  console.log(JSON.stringify({ ...fitted, errors }));
} finally {
  await browser.close();
}
