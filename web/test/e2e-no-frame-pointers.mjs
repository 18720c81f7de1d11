// End-to-end on the timer demo built without frame pointers (-C force-frame-pointers=no):
//
//   node test/e2e-no-frame-pointers.mjs path/to/no-frame-pointers/timer-leak
//
// With the default frame-pointer walk, stacks come out short, and the index page and the UI say
// so, with the fix, before anything is clicked. With `--unwinder dwarf` the same binary has
// whole stacks: no warning, and the growing list names the leak's function. Saves screenshots
// to test/artifacts/.

import assert from "node:assert/strict";
import { artifacts, check, finish, launchBrowser, startDemo } from "./harness.mjs";

const demoBin = process.argv[2];
assert.ok(demoBin, "usage: node test/e2e-no-frame-pointers.mjs path/to/timer-leak");
const browser = await launchBrowser();

async function open(args, wait) {
  const demo = await startDemo(demoBin, args);
  await new Promise((r) => setTimeout(r, wait));
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.goto(`http://${demo.addr}/debug/pprof/ui/`);
  await page.waitForFunction(() => window.__heapsight?.app?.tree, null, { timeout: 30000 });
  return { demo, page };
}

try {
  {
    const { demo, page } = await open([], 6000);
    await check("frame pointers missing: the UI says stacks are short, and how to fix it", async () => {
      const bar = page.locator("#warnings");
      assert.ok(await bar.isVisible(), "the warning bar is shown");
      const text = await bar.innerText();
      assert.match(text, /3 frames or fewer/, text);
      assert.match(text, /force-frame-pointers=yes/, text);
      assert.match(text, /Unwinder::Dwarf/, text);
    });
    await check("frame pointers missing: so does the index page", async () => {
      const index = await (await fetch(`http://${demo.addr}/debug/pprof/`)).text();
      assert.match(index, /<strong>Warning:<\/strong> most recorded stacks are 3 frames or fewer/, index);
    });
    await page.screenshot({ path: `${artifacts}no-frame-pointers-warned.png` });
    demo.child.kill();
  }
  {
    const { demo, page } = await open(["--unwinder", "dwarf"], 12000);
    await page.waitForFunction(() => document.querySelectorAll("#growing li").length > 0, null, { timeout: 30000 });
    await check("with the DWARF unwinder: no warning", async () => {
      assert.ok(!(await page.locator("#warnings").isVisible()), await page.locator("#warnings").innerText());
    });
    await check("with the DWARF unwinder: the growing list names after first", async () => {
      const first = await page.locator("#growing li").first().innerText();
      assert.match(first.split("\n")[0], /timer_leak_demo::after$/, first);
    });
    await check("with the DWARF unwinder: the whole stack, its runtime frames folded, after in the first rows", async () => {
      const rows = await page.evaluate(() => {
        const app = window.__heapsight.app;
        const row = (pattern) => app.rects.find((r) => r.node > 0 && pattern.test(app.tree.name(r.node)))?.row;
        return { folded: row(/^\[(tokio|thread|program)/), after: row(/^timer_leak_demo::after$/) };
      });
      assert.equal(rows.folded, 1, "the root's child is one folded runtime frame: glibc's entry points are plumbing too");
      assert.ok(rows.after !== undefined && rows.after <= 4, `after is drawn on row ${rows.after}`);
    });
    await page.screenshot({ path: `${artifacts}no-frame-pointers-dwarf.png` });
    demo.child.kill();
  }
} finally {
  await browser.close();
}
finish();
