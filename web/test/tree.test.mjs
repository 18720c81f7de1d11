// Unit tests of the tree layout and the colours, on the same modules the UI bundles.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Tree, layout } from "./build/tree.mjs";
import { growthColor, changeText, formatValue, PALETTES } from "./build/color.mjs";

// root -> main -> {a (60), b (30), c..z tiny}; a -> x (40)
function sample() {
  const strings = ["root", "", "main", "a", "b", "x"];
  const name = [0, 2, 3, 4, 5];
  const parent = [0, 0, 1, 1, 2];
  const total = [100, 100, 60, 30, 40];
  const self = [0, 10, 20, 30, 40];
  for (let i = 0; i < 10; i++) {
    strings.push(`tiny${i}`);
    name.push(strings.length - 1);
    parent.push(1);
    total.push(0.5);
    self.push(0.5);
  }
  total[0] = total[1] = 95;
  const n = name.length;
  return new Tree({
    type: "inuse_space", unit: "bytes", time_ms: 0, has_base: false, merged_nodes: 0,
    strings, name, file: Array(n).fill(1), parent, self, total,
    base: Array(n).fill(0), in_base: Array(n).fill(false),
  });
}

test("children are laid out left to right inside their parent", () => {
  const t = sample();
  assert.equal(t.start[2], 0);
  assert.equal(t.start[3], 60, "b starts where a ends");
  assert.equal(t.start[4], 0, "x starts at a's start");
  assert.equal(t.depth[4], 3);
  assert.deepEqual(t.path(4), [0, 1, 2, 4]);
  assert.equal(t.find(["main", "a", "x"]), 4);
  assert.equal(t.find(["main", "nope"]), undefined);
});

test("frames narrower than a pixel are merged, wide ones are drawn to scale", () => {
  const t = sample();
  const rects = layout(t, 0, 95);
  const a = rects.find((r) => r.node === 2);
  assert.deepEqual([a.x, a.w, a.row], [0, 60, 2]);
  const slivers = rects.filter((r) => r.node === -1);
  assert.equal(slivers.length, 1, "ten adjacent tiny frames become one rectangle");
  assert.ok(Math.abs(slivers[0].w - 5) < 1e-9);
  assert.ok(!rects.some((r) => r.node >= 5), "tiny frames are not drawn one by one");
});

test("zooming fills the width with the zoomed frame and keeps its ancestors above", () => {
  const t = sample();
  const rects = layout(t, 2, 600);
  assert.deepEqual(rects.slice(0, 3).map((r) => [r.node, r.row, r.w]), [[0, 0, 600], [1, 1, 600], [2, 2, 600]]);
  const x = rects.find((r) => r.node === 4);
  assert.deepEqual([x.x, x.w, x.row], [0, 400, 3], "x is 40 of a's 60");
  assert.ok(!rects.some((r) => r.node === 3), "b is outside the zoomed frame");
});

test("growth is red, shrinkage blue, new code distinct, noise neutral", () => {
  const p = PALETTES.standard;
  const grow = growthColor({ total: 900, base: 100, inBase: true }, 800, 10, p);
  const shrink = growthColor({ total: 100, base: 900, inBase: true }, 800, 10, p);
  assert.match(grow, /^rgb\((\d+), (\d+), (\d+)\)$/);
  const [r, g, b] = grow.match(/\d+/g).map(Number);
  assert.ok(r > 200 && g < 80 && b < 80, grow);
  const [r2, , b2] = shrink.match(/\d+/g).map(Number);
  assert.ok(b2 > r2, shrink);
  assert.equal(growthColor({ total: 50, base: 0, inBase: false }, 800, 10, p), p.fresh);
  assert.equal(growthColor({ total: 105, base: 100, inBase: true }, 800, 10, p), p.neutral);
  const cb = growthColor({ total: 900, base: 100, inBase: true }, 800, 10, PALETTES.colorblind);
  assert.notEqual(cb, grow, "the colour-blind palette differs");
});

test("values and changes read as people write them", () => {
  assert.equal(formatValue(1536, "bytes"), "1.5 KiB");
  assert.equal(formatValue(3 << 20, "bytes"), "3.0 MiB");
  assert.equal(formatValue(12345, "count"), "12.3k");
  assert.equal(changeText({ total: 3 << 20, base: 1 << 20, inBase: true }, "bytes"), "1.0 MiB → 3.0 MiB (+2.0 MiB, +200%)");
  assert.match(changeText({ total: 10, base: 0, inBase: false }, "count"), /new\)$/);
});

test("a long ancestor path is cut to the root and the nearest ancestors", () => {
  // A chain root -> f1 -> ... -> f9.
  const n = 10;
  const strings = ["root", ""];
  for (let i = 1; i < n; i++) strings.push(`f${i}`);
  const t = new Tree({
    type: "inuse_space", unit: "bytes", time_ms: 0, has_base: false, merged_nodes: 0, strings,
    name: [0, ...Array.from({ length: n - 1 }, (_, i) => i + 2)], file: Array(n).fill(1),
    parent: Array.from({ length: n }, (_, i) => Math.max(0, i - 1)),
    self: Array(n).fill(0), total: Array(n).fill(10), base: Array(n).fill(0), in_base: Array(n).fill(false),
  });
  const rects = layout(t, 9, 100, 1, 4);
  assert.deepEqual(rects.map((r) => [r.node, r.row]), [[0, 0], [7, 1], [8, 2], [9, 3]]);
});

test("children are ordered largest first whatever their order in the arrays", () => {
  const t = new Tree({
    type: "inuse_space", unit: "bytes", time_ms: 0, has_base: false, merged_nodes: 0,
    strings: ["root", "", "small", "big"], name: [0, 2, 3], file: [1, 1, 1], parent: [0, 0, 0],
    self: [0, 10, 90], total: [100, 10, 90], base: [0, 0, 0], in_base: [false, false, false],
  });
  assert.deepEqual(t.children[0], [2, 1]);
  assert.equal(t.start[2], 0, "the big one is on the left");
  assert.equal(t.start[1], 90);
});

test("narrow frames keep the end of their names: generics, then leading path segments go", async () => {
  const { shortLabel } = await import("./build/label.mjs");
  const name = "timer_leak_demo::service::Sessions::remember::{{closure}}";
  assert.equal(shortLabel(name, 100), name, "a name that fits is left alone");
  assert.equal(shortLabel(name, 31), "Sessions::remember::{{closure}}");
  assert.equal(shortLabel(name, 22), "remember::{{closure}}");
  assert.equal(shortLabel(name, 10), "remember:…");
  assert.equal(shortLabel("alloc::vec::Vec<T,A>::push", 14), "vec::Vec::push");
  assert.equal(shortLabel("<myapp::Cfg as core::clone::Clone>::clone", 20).length, 20);
});

test("a growing site's ages are put in words", async () => {
  const { agesText, duration } = await import("./build/ages.mjs");
  const leak = { before: 0, segments: [1024, 1024, 2048], oldest_seconds: 290, median_seconds: 100, pattern: "every_age" };
  assert.equal(
    agesText(leak, "bytes"),
    "holds blocks of every age: what it allocates stays (oldest 5 min, median 2 min; 2.0 KiB of 4.0 KiB from the last third of the window)",
  );
  assert.match(agesText({ ...leak, before: 4096, segments: [0, 0, 0], pattern: "old_only" }, "bytes"), /^holds only blocks from before the window/);
  assert.equal(agesText({ ...leak, pattern: null }, "bytes"), "");
  assert.deepEqual([duration(45), duration(720), duration(7200), duration(259200)], ["45 s", "12 min", "2.0 h", "3.0 d"]);
});
