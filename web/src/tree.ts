// A call tree as the server sends it (docs/ui-api.md), laid out for an icicle graph.
//
// Layout is computed once per tree: each node's horizontal start, in the tree's own units
// (bytes or objects), and its depth. Drawing then maps a zoomed range of units to pixels.

import type { TreeJson } from "./api";

export class Tree {
  readonly n: number;
  readonly start: Float64Array;
  readonly depth: Int32Array;
  readonly children: number[][];
  readonly maxDepth: number;

  constructor(readonly json: TreeJson) {
    const n = json.name.length;
    this.n = n;
    this.start = new Float64Array(n);
    this.depth = new Int32Array(n);
    this.children = Array.from({ length: n }, () => []);
    for (let i = 1; i < n; i++) this.children[json.parent[i]].push(i);
    // The columnar format carries parents only: order each node's children largest first.
    for (const c of this.children) if (c.length > 1) c.sort((a, b) => json.total[b] - json.total[a]);
    let maxDepth = 0;
    // Parents come before children; each parent's children are placed left to right, largest
    // first.
    for (let i = 0; i < n; i++) {
      let x = this.start[i];
      for (const c of this.children[i]) {
        this.start[c] = x;
        this.depth[c] = this.depth[i] + 1;
        x += Math.max(0, json.total[c]);
        if (this.depth[c] > maxDepth) maxDepth = this.depth[c];
      }
    }
    this.maxDepth = maxDepth;
  }

  name(i: number): string {
    return this.json.strings[this.json.name[i]];
  }

  file(i: number): string {
    return this.json.strings[this.json.file[i]];
  }

  /** "file:line" of the node, or "" when the file is unknown. */
  where(i: number): string {
    const file = this.file(i);
    const line = this.json.line?.[i] ?? 0;
    return file ? (line > 0 ? `${file}:${line}` : file) : "";
  }

  total(i: number): number {
    return this.json.total[i];
  }

  /** Node indices from the root to `i`. */
  path(i: number): number[] {
    const out = [i];
    while (i !== 0) {
      i = this.json.parent[i];
      out.push(i);
    }
    return out.reverse();
  }

  /** The node reached by following `names` (root first, without "root") from the root. */
  find(names: string[], from = 0): number | undefined {
    let at = from;
    for (const name of names) {
      const next = this.children[at].find((c) => this.name(c) === name);
      if (next === undefined) return undefined;
      at = next;
    }
    return at;
  }

  /** The first node (breadth first) whose name is `name`. */
  findByName(name: string): number | undefined {
    const queue = [0];
    while (queue.length) {
      const i = queue.shift()!;
      if (this.name(i) === name) return i;
      queue.push(...this.children[i]);
    }
    return undefined;
  }

  /** The share of the root's total in nodes matching `re` (nested matches counted once). */
  matchedShare(re: RegExp): number {
    let matched = 0;
    const visit = (i: number) => {
      if (i !== 0 && re.test(this.name(i))) {
        matched += Math.max(0, this.total(i));
        return;
      }
      for (const c of this.children[i]) visit(c);
    };
    visit(0);
    const root = this.total(0);
    return root > 0 ? matched / root : 0;
  }
}

/** A rectangle to draw: node index, row, and pixel span; `node` is -1 for merged slivers. */
export interface Rect {
  node: number;
  row: number;
  x: number;
  w: number;
  /** The label drawn in it, once drawn (none when it is too narrow for one). */
  label?: string;
}

/**
 * The rectangles of an icicle graph `width` pixels wide, zoomed on `zoom`: its ancestors span
 * the full width above it, its subtree fills the width below. Frames narrower than `minPx` are
 * not drawn one by one: each run of them in a row becomes one merged rectangle.
 */
export function layout(tree: Tree, zoom: number, width: number, minPx = 1, maxAncestors = 6): Rect[] {
  const rects: Rect[] = [];
  let path = tree.path(zoom);
  // Deep stacks: the root and the nearest ancestors are enough context above the zoomed frame.
  if (path.length > maxAncestors) path = [path[0], ...path.slice(path.length - (maxAncestors - 1))];
  path.forEach((node, row) => rects.push({ node, row, x: 0, w: width }));
  const base = path.length - 1;
  const x0 = tree.start[zoom];
  const span = Math.max(1, tree.total(zoom));
  const scale = width / span;
  const walk = (i: number, row: number) => {
    let merged: Rect | undefined;
    for (const c of tree.children[i]) {
      const w = Math.max(0, tree.total(c)) * scale;
      const x = (tree.start[c] - x0) * scale;
      if (w < minPx) {
        if (merged && Math.abs(merged.x + merged.w - x) < 0.5) merged.w += w;
        else if (w > 0) {
          merged = { node: -1, row, x, w };
          rects.push(merged);
        }
        continue;
      }
      merged = undefined;
      rects.push({ node: c, row, x, w });
      walk(c, row + 1);
    }
  };
  walk(zoom, base + 1);
  // Merged slivers narrower than a pixel are drawn a pixel wide, or not at all if invisible.
  return rects.filter((r) => r.node !== -1 || r.w >= 0.25);
}
