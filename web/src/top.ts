// The top table's rows: per function, self, total (recursion counted once) and change against
// the baseline, from a call tree.

import type { Tree } from "./tree";

export interface TopRow {
  name: string;
  self: number;
  total: number;
  change: number;
}

/** The 100 largest functions of `t`: by change when it has a baseline, else by self. */
export function topRows(t: Tree): TopRow[] {
  const j = t.json;
  // Per function (its index in the string table), iteratively: 100,000 nodes take a few ms.
  const k = j.strings.length;
  const [self, total, base] = [new Float64Array(k), new Float64Array(k), new Float64Array(k)];
  const onPath = new Int32Array(k);
  // Negative entries mark leaving a node.
  const stack: number[] = [...t.children[0]];
  while (stack.length) {
    const i = stack.pop()!;
    if (i < 0) {
      onPath[j.name[-i - 1]]--;
      continue;
    }
    const f = j.name[i];
    self[f] += j.self[i];
    if (onPath[f] === 0) {
      total[f] += j.total[i];
      base[f] += j.base[i];
    }
    onPath[f]++;
    stack.push(-i - 1, ...t.children[i]);
  }
  const rows: TopRow[] = [];
  for (let f = 0; f < k; f++) {
    if (total[f] !== 0 || self[f] !== 0) rows.push({ name: j.strings[f], self: self[f], total: total[f], change: total[f] - base[f] });
  }
  const key = j.has_base ? (r: { change: number }) => r.change : (r: { self: number }) => r.self;
  return rows.sort((a, b) => key(b) - key(a)).slice(0, 100);
}
