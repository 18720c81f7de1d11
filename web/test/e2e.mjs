// End-to-end: the real timer-leak demo, its real server, the UI in Debian's headless Chromium.
//
//   node test/e2e.mjs [path/to/timer-leak | path/to/timer-leak-jemalloc]
//
// Checks that the page loads with no request leaving loopback, that the growing list names
// `after` first, that the `after` frame is painted in the growth colour (read back from the
// canvas), and that search and zoom work. Run against `timer-leak-jemalloc`, the same checks
// hold for jemalloc's profiler, and a demo started without `prof:true` shows why in the page.
// Saves a screenshot to test/artifacts/.

import assert from "node:assert/strict";
import { artifacts, check, finish, launchBrowser, startDemo as start } from "./harness.mjs";

const demoBin = process.argv[2] ?? new URL("../../target/release/timer-leak", import.meta.url).pathname;

// The demo on jemalloc serves jemalloc's own profiler through the same endpoints and UI.
const demoName = demoBin.split("/").pop();
const onJemalloc = demoName.includes("jemalloc");
const startDemo = (env = {}) => start(demoBin, [], env);

const { child, addr } = await startDemo();
const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Two snapshots (2 s apart) must exist for growth: the mount-time one and the baseline.
  await new Promise((r) => setTimeout(r, 5000));
  await page.goto(`http://${addr}/debug/pprof/ui/`);
  await page.waitForFunction(() => window.__heapsight?.app?.tree && document.querySelectorAll("#growing li").length > 0, null, { timeout: 30000 });

  await check("the page loads, with no request leaving loopback and no script error", async () => {
    assert.ok(requests.length >= 4, requests.join("\n"));
    for (const u of requests) assert.match(u, /^http:\/\/127\.0\.0\.1:\d+\//, u);
    assert.deepEqual(errors, []);
  });

  await check("the header names where the heap data comes from", async () => {
    const want = onJemalloc ? "jemalloc profiler" : "heapsight sampler";
    assert.equal(await page.locator("#source").innerText(), `heap from the ${want}`);
  });

  await check("the header says how much of the process the profiler itself holds", async () => {
    await page.waitForFunction(() => document.getElementById("memory").textContent !== "");
    const text = await page.locator("#memory").innerText();
    if (onJemalloc) {
      // jemalloc's profiler does not tell its own memory apart: the header says so.
      assert.match(text, /^process \d+\.\d MiB \(this source does not measure the profiler's share\)$/, text);
      return;
    }
    const m = text.match(/^profiler (\d+\.\d) MiB of (\d+\.\d) MiB \(tables \d+\.\d/);
    assert.ok(m, text);
    assert.ok(+m[1] > 0 && +m[1] < +m[2], text);
  });

  await check("the growing list names after first", async () => {
    // The entry's first line names it; a second line may tell its blocks' ages.
    const first = await page.locator("#growing li").first().innerText();
    assert.match(first.split("\n")[0], /timer_leak_demo::after$/, first);
  });

  await check("without a click, the runtime's frames are folded and after is in the first rows", async () => {
    const rows = await page.evaluate(() => {
      const app = window.__heapsight.app;
      const row = (pattern) => app.rects.find((r) => r.node > 0 && pattern.test(app.tree.name(r.node)))?.row;
      return { folded: row(/^\[(tokio|thread|program)/), after: row(/^timer_leak_demo::after$/) };
    });
    assert.equal(rows.folded, 1, "the root's child is one folded runtime frame");
    assert.ok(rows.after !== undefined && rows.after <= 4, `after is drawn on row ${rows.after}`);
  });

  await check("the top table opens by self, the leak's function first, plumbing hidden", async () => {
    const first = await page.locator("#top tbody tr").first().locator("td").first().innerText();
    assert.equal(first, "timer_leak_demo::after");
    const names = await page.locator("#top tbody tr td:first-child").allInnerTexts();
    assert.ok(!names.some((n) => /^(std|core|alloc|tokio)::|^\[/.test(n)), names.join("\n"));
  });

  await check("one control shows every runtime frame again, and the choice is in the URL", async () => {
    await page.uncheck("#fold");
    await page.waitForFunction(() => window.__heapsight.app.tree.findByName("[tokio blocking pool]") === undefined && window.__heapsight.app.tree.findByName("[tokio worker]") === undefined);
    assert.match(await page.evaluate(() => location.hash), /fold=0/);
    const names = await page.locator("#top tbody tr td:first-child").allInnerTexts();
    assert.ok(names.some((n) => /^(std|core|alloc|tokio)::/.test(n)), "the plumbing's rows are back");
    await page.check("#fold");
    await page.waitForFunction(() => window.__heapsight.app.tree.json.strings.some((s) => s.startsWith("[")));
  });

  await check("the after frame is painted as growth", async () => {
    assert.equal(await page.evaluate(() => window.__heapsight.app.tree.json.has_base), true, "growth mode opened by itself");
    // Zoom on `after`, then read the pixels of its row back from the canvas.
    assert.ok(await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after")));
    const [r, g, b] = await page.evaluate(() => {
      const app = window.__heapsight.app;
      const rect = app.rects.find((x) => x.node === app.zoomNode);
      const dpr = window.devicePixelRatio || 1;
      const ctx = app.canvas.getContext("2d");
      // The frame's right end: its label, drawn from the left, does not reach there.
      return Array.from(ctx.getImageData(Math.round((rect.x + rect.w - 4) * dpr), Math.round((rect.row * 18 + 4) * dpr), 1, 1).data);
    });
    assert.ok(r > 180 && g < 120 && b < 120, `after is drawn in rgb(${r}, ${g}, ${b}), not red`);
  });

  await check("hovering a frame shows its name, file:line, values and change", async () => {
    await page.click("#reset");
    assert.ok(await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after")));
    const [x, y] = await page.evaluate(() => {
      const app = window.__heapsight.app;
      const r = app.rects.find((q) => q.node === app.zoomNode);
      const box = app.canvas.getBoundingClientRect();
      return [box.left + r.x + r.w / 2, box.top + r.row * 18 + 9];
    });
    await page.mouse.move(x, y);
    const tip = await page.locator("#tip").innerText();
    assert.match(tip, /^timer_leak_demo::after\n.*demo\/src\/lib\.rs:\d+\n/, tip);
    assert.match(tip, /total .*\(\d+\.\d%\), self /, tip);
    assert.match(tip, / → .*\(\+.*, \+\d+%\)/, tip);
    await page.mouse.move(0, 0);
  });

  await check("the noise threshold greys out small changes", async () => {
    assert.ok(await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after")));
    await page.fill("#noise", "100");
    assert.equal(await page.evaluate(() => window.__heapsight.colorOf("timer_leak_demo::after")), "#d4d4d8", "under a 100% threshold nothing has changed");
    assert.match(await page.evaluate(() => location.hash), /noise=1/);
    await page.fill("#noise", "0.1");
    assert.match(await page.evaluate(() => window.__heapsight.colorOf("timer_leak_demo::after")), /^rgb\(2\d\d, /, "red again");
  });

  await check("search reports the share it matches", async () => {
    await page.fill("#search", "timer_leak_demo::after");
    await page.waitForFunction(() => /matches/.test(document.getElementById("searchinfo").textContent));
    const info = await page.locator("#searchinfo").innerText();
    const pct = Number(info.match(/([\d.]+)%/)[1]);
    assert.ok(pct > 50, info);
    assert.match(await page.evaluate(() => location.hash), /search=timer_leak_demo/, "the view is in the URL");
    await page.fill("#search", "");
  });

  await check("zoom follows clicks and breadcrumbs, and resets", async () => {
    await page.click("#reset");
    assert.equal(await page.evaluate(() => window.__heapsight.app.zoomNode), 0);
    await page.locator("#growing li").first().click();
    const crumbs = await page.locator("#crumbs").innerText();
    assert.match(crumbs, /timer_leak_demo::after/, crumbs);
    // A click on the canvas zooms on the frame under the cursor: the root's first child.
    await page.click("#reset");
    await page.mouse.click((await page.locator("#flame").boundingBox()).x + 20, (await page.locator("#flame").boundingBox()).y + 18 + 9);
    assert.equal(await page.evaluate(() => window.__heapsight.app.tree.path(window.__heapsight.app.zoomNode).length), 2);
    await page.keyboard.press("Escape");
    assert.equal(await page.evaluate(() => window.__heapsight.app.zoomNode), 0);
  });

  await check("the top table and the graph select each other", async () => {
    await page.click("#reset");
    const row = page.locator("#top tbody tr", { hasText: "timer_leak_demo::after" }).first();
    await row.click();
    assert.equal(await page.inputValue("#search"), "^timer_leak_demo::after$", "a row highlights its frames");
    assert.ok(await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after")));
    assert.equal(await page.locator("#top tr.sel td").first().innerText(), "timer_leak_demo::after", "a frame highlights its row");
    await page.fill("#search", "");
  });

  await check("keyboard: arrows move the selection, Enter zooms", async () => {
    await page.click("#reset");
    await page.locator("body").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    const sel = await page.evaluate(() => window.__heapsight.app.selected);
    assert.equal(await page.evaluate((s) => window.__heapsight.app.tree.path(s).length, sel), 3, "two levels down");
    await page.keyboard.press("ArrowUp");
    await page.keyboard.press("Enter");
    assert.equal(await page.evaluate(() => window.__heapsight.app.tree.path(window.__heapsight.app.zoomNode).length), 2);
  });

  await check("focus, hide and callers come back from the server", async () => {
    const whole = await page.evaluate(() => window.__heapsight.app.tree.total(0));
    await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after"));
    await page.click("#callers");
    await page.waitForFunction(() => window.__heapsight.app.tree.name(1) === "timer_leak_demo::after");
    assert.match(await page.locator("#status").innerText(), /callers timer_leak_demo::after/);
    await page.click("#clear");
    await page.waitForFunction(() => !/callers/.test(document.getElementById("status").innerText));
    await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::after"));
    await page.click("#hide");
    await page.waitForFunction(() => /hide/.test(document.getElementById("status").innerText));
    assert.equal(await page.evaluate(() => window.__heapsight.app.tree.findByName("timer_leak_demo::after")), undefined);
    await page.click("#clear");
    await page.waitForFunction(() => !/hide/.test(document.getElementById("status").innerText));
    await page.evaluate(() => window.__heapsight.zoomTo("timer_leak_demo::busy_loop::{{closure}}"));
    await page.click("#focus");
    await page.waitForFunction(() => /focus/.test(document.getElementById("status").innerText));
    // Every stack left passes through the focused function.
    const [root, through] = await page.evaluate(() => {
      const t = window.__heapsight.app.tree;
      let through = 0;
      const visit = (i) => (t.name(i) === "timer_leak_demo::busy_loop::{{closure}}" ? (through += t.total(i)) : t.children[i].forEach(visit));
      visit(0);
      return [t.total(0), through];
    });
    assert.ok(root > 0 && root === through, `${through} of ${root} passes through busy_loop (unfocused: ${whole})`);
    await page.click("#clear");
  });

  await check("the timeline has a bytes scale and times, reads values on hover, and a drag picks a window", async () => {
    const labels = await page.evaluate(() => window.__heapsight.app.timeline.labels);
    assert.ok(labels.some((l) => /^[\d.]+ (B|KiB|MiB|GiB)$/.test(l) && l !== "0 B"), labels.join(" | "));
    assert.ok(labels.some((l) => /^\d\d:\d\d:\d\d$/.test(l)), labels.join(" | "));
    await page.evaluate(() => window.scrollTo(0, 0));
    const box = await page.locator("#timeline").boundingBox();
    const [y, x0, x1] = [box.y + box.height / 2, box.x + 64 + 2, box.x + box.width - 10];
    await page.mouse.move(x1, y);
    const hovered = await page.evaluate(() => window.__heapsight.app.timeline.labels);
    assert.ok(hovered.some((l) => / in use$/.test(l)), hovered.join(" | "));
    await page.mouse.move(x0, y);
    await page.mouse.down();
    await page.mouse.move(x1, y, { steps: 5 });
    await page.mouse.up();
    const first = await page.evaluate(() => String(window.__heapsight.app.snapshots.snapshots[0].id));
    await page.waitForFunction((id) => window.__heapsight.app.state.base === id, first);
    assert.equal(await page.evaluate(() => window.__heapsight.app.state.at), "now", "dragged to the end: up to now");
    assert.match(await page.evaluate(() => location.hash), new RegExp(`base=${first}`));
  });

  await check("pprof files from disk open, and two of them diff", async () => {
    const heap = Buffer.from(await (await page.request.get(`http://${addr}/debug/pprof/heap`)).body());
    await new Promise((r) => setTimeout(r, 1500));
    const later = Buffer.from(await (await page.request.get(`http://${addr}/debug/pprof/heap`)).body());
    await page.setInputFiles("#files", [
      { name: "before.pb.gz", mimeType: "application/octet-stream", buffer: heap, lastModified: 1000 },
      { name: "after.pb.gz", mimeType: "application/octet-stream", buffer: later, lastModified: 2000 },
    ]);
    await page.waitForFunction(() => /after\.pb\.gz against before\.pb\.gz/.test(document.getElementById("status").innerText));
    const [now, base] = await page.evaluate(() => [window.__heapsight.app.tree.total(0), window.__heapsight.app.tree.json.base[0]]);
    assert.ok(now > base && base > 0, `the leak grew between the files: ${base} -> ${now}`);
    await page.click("#now");
    await page.waitForFunction(() => !/pb\.gz/.test(document.getElementById("status").innerText));
  });

  await check("the page is served with a self-only content security policy", async () => {
    const r = await page.request.get(`http://${addr}/debug/pprof/ui/`);
    assert.equal(r.headers()["content-security-policy"], "default-src 'self'");
  });

  if (onJemalloc) {
    await check("without prof:true the page says what to set, as the server does (501)", async () => {
      // The environment overrides the demo's compiled-in options.
      const off = await startDemo({ _RJEM_MALLOC_CONF: "prof:false" });
      try {
        const p = await browser.newPage();
        await p.goto(`http://${off.addr}/debug/pprof/ui/`);
        await p.waitForFunction(() => /Could not load/.test(document.getElementById("status").innerText), null, { timeout: 15000 });
        const status = await p.locator("#status").innerText();
        assert.match(status, /501: jemalloc's profiler is off in this process/);
        assert.match(status, /prof:true/);
      } finally {
        off.child.kill();
      }
    });
  }

  await page.locator("#growing li").first().click();
  await page.screenshot({ path: `${artifacts}${demoName}-ui.png` });
  console.log(`screenshot: ${artifacts}${demoName}-ui.png`);
} finally {
  await browser.close();
  child.kill();
}
finish();
