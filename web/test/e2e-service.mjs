// End-to-end on the service scenario: a leak among the noise of a real service (per-request
// buffers, a cache that fills over its first 10-20 s), found without a click.
//
//   node test/e2e-service.mjs [path/to/timer-leak | path/to/timer-leak-jemalloc]
//
// After the cache has filled, the page opens at 1600x1000 and, before anything is clicked:
// the growing list names the leaking function first, the flame graph draws it with its name,
// and the cache is not ranked above it. Grouped by the `route` label, the flame graph's first
// level and the growing list are per route. Saves screenshots to test/artifacts/.

import assert from "node:assert/strict";
import { artifacts, check, finish, launchBrowser, startDemo } from "./harness.mjs";

const demoBin = process.argv[2] ?? new URL("../../target/release/timer-leak", import.meta.url).pathname;
const demoName = demoBin.split("/").pop();
const LEAK = /Sessions::remember/;
const LEAK_SOURCE = /Sessions::remember/;
const CACHE = /cached_item/;
// The cache fills in about 17 s at the demo's default load; the page opens well after.
const WARM_UP_MS = 30_000;

const { child, addr } = await startDemo(demoBin, ["--scenario", "service"]);
const browser = await launchBrowser();
try {
  await new Promise((r) => setTimeout(r, WARM_UP_MS));
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`http://${addr}/debug/pprof/ui/`);
  await page.waitForFunction(() => window.__heapsight?.app?.tree && document.querySelectorAll("#growing li").length > 0, null, { timeout: 30000 });
  const growing = await page.locator("#growing li").allInnerTexts();

  await check("the page loads with no script error", async () => {
    assert.deepEqual(errors, []);
  });

  await check("the leak's function is the first entry of the growing list", async () => {
    assert.match(growing[0], LEAK, growing.join("\n"));
  });

  await check("the cache that filled during warm-up is not ranked above the leak", async () => {
    const cache = growing.findIndex((g) => CACHE.test(g));
    const leak = growing.findIndex((g) => LEAK.test(g));
    assert.ok(cache === -1 || cache > leak, growing.join("\n"));
  });

  await check("the leak is drawn and named in the flame graph on the first screen", async () => {
    const drawn = await page.evaluate((source) => {
      const app = window.__heapsight.app;
      const leak = new RegExp(source);
      const box = app.canvas.getBoundingClientRect();
      return app.rects
        .filter((r) => r.node > 0 && leak.test(app.tree.name(r.node)))
        .map((r) => ({ label: r.label ?? "", top: box.top + window.scrollY + r.row * 18 }));
    }, LEAK.source);
    // Labelled with the function's own name (not a cut-off path), or named by the callout the
    // graph draws under the fastest-growing function's frame; above the fold either way.
    const callout = await page.evaluate(() => {
      const app = window.__heapsight.app;
      const c = app.flame.callout;
      return c && { text: c.text, top: app.canvas.getBoundingClientRect().top + window.scrollY + c.y };
    });
    const labelled = drawn.some((r) => /remember/.test(r.label) && r.top + 18 <= 1000);
    const calledOut = callout && /remember/.test(callout.text) && callout.top + 18 <= 1000;
    assert.ok(labelled || calledOut, JSON.stringify({ drawn, callout }));
  });

  const sampler = !demoName.includes("jemalloc");
  await check("the leak's entry tells its blocks' ages: every age, as a leak's", async () => {
    if (!sampler) {
      // jemalloc's profiler does not record when blocks were allocated: no ages line.
      assert.doesNotMatch(growing[0], /holds /, growing[0]);
      return;
    }
    assert.match(growing[0], /holds blocks of every age/, growing.join("\n"));
  });

  await page.screenshot({ path: `${artifacts}${demoName}-service-ui.png` });

  await check("the retained view keeps the leak and names its window", async () => {
    const retained = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    retained.on("pageerror", (e) => errors.push(e.message));
    await retained.goto(`http://${addr}/debug/pprof/ui/#retained=1`);
    await retained.waitForFunction(() => /allocated since|Could not load/.test(document.getElementById("status").textContent), null, { timeout: 30000 });
    const status = await retained.locator("#status").innerText();
    if (!sampler) {
      assert.match(status, /does not record when blocks were allocated/, status);
      return;
    }
    assert.match(status, /allocated since \d\d:\d\d:\d\d and still in use/, status);
    const names = await retained.evaluate(() => {
      const t = window.__heapsight.app.tree;
      return t.json.name.map((i) => t.json.strings[i]);
    });
    assert.ok(names.some((n) => LEAK_SOURCE.test(n)), names.slice(0, 40).join("\n"));
    await retained.screenshot({ path: `${artifacts}${demoName}-service-retained.png` });
    assert.deepEqual(errors, []);
  });
  await check("grouped by route: one first-level frame per route, ranked and named by label", async () => {
    if (!sampler) {
      // jemalloc's profiler records no labels: the menu stays hidden.
      assert.ok(await page.locator("#group").isHidden());
      return;
    }
    // The header's menu lists the label keys the heap carries; a hover shows whose memory
    // a frame holds before anything is grouped.
    const [x, y] = await page.evaluate((source) => {
      const app = window.__heapsight.app;
      const leak = new RegExp(source);
      const r = app.rects.find((q) => q.node > 0 && leak.test(app.tree.name(q.node)));
      const box = app.canvas.getBoundingClientRect();
      return [box.left + r.x + r.w / 2, box.top + r.row * 18 + 9];
    }, LEAK.source);
    await page.mouse.move(x, y);
    const tip = await page.locator("#tip").innerText();
    assert.match(tip, /^route=\/(item|render): .*\(\d+%\)$/m, tip);
    await page.mouse.move(0, 0);
    await page.selectOption("#group", "route");
    await page.waitForFunction(() => /grouped by route/.test(document.getElementById("status").textContent), null, { timeout: 30000 });
    const first = await page.evaluate(() => {
      const t = window.__heapsight.app.tree;
      return t.json.parent.flatMap((p, i) => (i > 0 && p === 0 ? [t.json.strings[t.json.name[i]]] : []));
    });
    assert.ok(first.includes("route=/item") && first.includes("route=/render"), first.join(", "));
    await page.waitForFunction(() => /route=/.test(document.querySelector("#growing li")?.textContent ?? ""), null, { timeout: 30000 });
    const grouped = await page.locator("#growing li").allInnerTexts();
    // Every request remembers its session: the growing list's first value is a route.
    assert.match(grouped[0], /route=\/(item|render)/, grouped.join("\n"));
    assert.match(page.url(), /group=route/);
    await page.screenshot({ path: `${artifacts}${demoName}-service-by-route.png` });
  });

  console.log(`screenshot: ${artifacts}${demoName}-service-ui.png`);
} finally {
  await browser.close();
  child.kill();
}
finish();
