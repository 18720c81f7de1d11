// The top table's rows: per function, self, total (recursion counted once) and change against
// the baseline, from a call tree; as `pprof -top`, sorted by self ("flat") unless asked
// otherwise.
//
// Frames that are not the service's own code (the server marks them, `user` in the tree's
// JSON) are hidden by default, and the self value of such a frame counts towards its nearest
// caller that is: the bytes a `Vec::push` allocated are the site's that pushed. A stack with no
// frame of the service's at all keeps its values on its own frames.

import type { Tree } from "./tree";

export interface TopRow {
  name: string;
  self: number;
  total: number;
  change: number;
  /** Whether the function is the service's own code. */
  user: boolean;
}

export type TopOrder = "self" | "total" | "change";

/** The 100 largest functions of `t` by `order`; with `all`, the plumbing's rows too. */
export function topRows(t: Tree, order: TopOrder = "self", all = false): TopRow[] {
  const j = t.json;
  const isUser = (i: number) => j.user?.[j.name[i]] ?? true;
  // Per function (its index in the string table), iteratively: 100,000 nodes take a few ms.
  const k = j.strings.length;
  const [self, total, base] = [new Float64Array(k), new Float64Array(k), new Float64Array(k)];
  // Where each node's self value goes: itself, or (hiding plumbing) its nearest user caller.
  // Every node comes after its parent, so one pass in order finds them.
  const owner = new Int32Array(j.name.length).fill(-1);
  for (let i = 1; i < j.name.length; i++) owner[i] = isUser(i) ? i : owner[j.parent[i]];
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
    self[j.name[all || owner[i] < 0 ? i : owner[i]]] += j.self[i];
    if (onPath[f] === 0) {
      total[f] += j.total[i];
      base[f] += j.base[i];
    }
    onPath[f]++;
    stack.push(-i - 1, ...t.children[i]);
  }
  const rows: TopRow[] = [];
  for (let f = 0; f < k; f++) {
    const user = j.user?.[f] ?? true;
    if (!all && !user && self[f] === 0) continue;
    if (total[f] !== 0 || self[f] !== 0) rows.push({ name: j.strings[f], self: self[f], total: total[f], change: total[f] - base[f], user });
  }
  const key = (r: TopRow) => (order === "change" ? Math.abs(r.change) : r[order]);
  return rows.sort((a, b) => key(b) - key(a) || b.total - a.total).slice(0, 100);
}
