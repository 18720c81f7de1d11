// Rendering benchmark in Debian's headless Chromium: a synthetic tree of 100,000 nodes, the
// time to its first frame (tree construction, layout, drawing) and to redraw after a zoom.
// Medians of 15 runs after a warm-up, printed against the budgets; it decides nothing by timing.
//
//   node test/bench.mjs [path/to/timer-leak]

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const demoBin = process.argv[2] ?? new URL("../../target/release/timer-leak", import.meta.url).pathname;
const child = spawn(demoBin, ["--addr", "127.0.0.1:0", "--rate", "100"], { stdio: ["ignore", "pipe", "inherit"] });
const addr = await new Promise((resolve) =>
  createInterface({ input: child.stdout }).on("line", (l) => {
    const m = l.match(/profiles: http:\/\/([\d.]+:\d+)\//);
    if (m) resolve(m[1]);
  }),
);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.goto(`http://${addr}/debug/pprof/ui/`);
  await page.waitForFunction(() => window.__heapsight?.loaded);
  const result = await page.evaluate(async () => {
    // 100,000 nodes: a root, 10 levels with fan-out 3 (88,573 nodes), then long thin chains.
    const n = 100_000;
    const strings = ["root", "src/lib.rs"];
    const name = [0], file = [1], parent = [0], self = [0], total = [0], base = [0], inBase = [true];
    const queue = [0];
    while (name.length < n) {
      const p = queue.shift() ?? Math.floor(Math.random() * name.length);
      for (let k = 0; k < 3 && name.length < n; k++) {
        strings.push(`crate::module${name.length % 97}::function_${name.length}`);
        name.push(strings.length - 1);
        file.push(1);
        parent.push(p);
        self.push(1 + (name.length % 7) * 100);
        total.push(0);
        base.push(0);
        inBase.push(name.length % 5 !== 0);
        queue.push(name.length - 1);
      }
    }
    // Totals from selves, children before parents (children always come later).
    for (let i = n - 1; i > 0; i--) total[i] += self[i];
    for (let i = n - 1; i > 0; i--) total[parent[i]] += total[i];
    for (let i = 0; i < n; i++) base[i] = Math.round(total[i] * (0.5 + ((i * 7919) % 100) / 100));
    const json = { type: "inuse_space", unit: "bytes", time_ms: 0, has_base: true, merged_nodes: 0, strings, name, file, parent, self, total, base, in_base: inBase };
    const { app, Tree } = window.__heapsight;
    const median = (v) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const first = [], zoom = [];
    // Run 0 warms up the JIT and is not counted.
    // Each step starts on an idle page: work a view defers until after its frame (the table)
    // belongs to that view, not to the next measurement.
    const settle = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 30)));
    for (let run = 0; run < 16; run++) {
      await settle();
      const t0 = performance.now();
      app.state.zoom = [];
      app.setTree(new Tree(json));
      await new Promise((r) => requestAnimationFrame(() => r()));
      if (run > 0) first.push(performance.now() - t0);
      await settle();
      const child = app.tree.children[0][run % 3];
      const t1 = performance.now();
      app.zoomTo(app.tree.children[child][0]);
      if (run > 0) zoom.push(performance.now() - t1);
    }
    const worst = (v) => Math.max(...v);
    return { nodes: n, drawn: app.rects.length, first: median(first), zoom: median(zoom), firstMax: worst(first), zoomMax: worst(zoom) };
  });
  console.log(`UI benchmark: ${result.nodes} nodes (last view drew ${result.drawn} rectangles), medians (worst) of 15 runs after a warm-up`);
  console.log(`  first frame (tree + layout + draw): ${result.first.toFixed(1)} ms (${result.firstMax.toFixed(1)})   budget 200 ms`);
  console.log(`  zoom redraw:                        ${result.zoom.toFixed(1)} ms (${result.zoomMax.toFixed(1)})   budget 16 ms`);
} finally {
  await browser.close();
  child.kill();
}
