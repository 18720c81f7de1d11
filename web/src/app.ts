// heapsight's web UI: the heap as an icicle flame graph, coloured by growth since a baseline
// snapshot, with the timeline of snapshots and the list of stacks growing fastest.
//
// This module wires the page together: it loads what the views show (through ./api, the only
// module that talks to the server), keeps the view state (./state) and hands the drawing to the
// flame graph (./flame) and the timeline (./timeline). The top table and the growing list,
// which are plain DOM, live here.

import { agesText, clock } from "./ages";
import { getJson, Growing, lastError, Memory, postTree, Snapshots, TreeJson } from "./api";
import { changeText, formatValue, PALETTES } from "./color";
import { FlameGraph, Look } from "./flame";
import { FILTERS, readState, writeState } from "./state";
import { Timeline } from "./timeline";
import { topRows } from "./top";
import { Tree } from "./tree";

/**
 * Runs `f` once the next frame has been drawn: the graph gets that frame; the table, whose
 * layout costs more than the canvas, follows.
 */
function afterFrame(f: () => void) {
  requestAnimationFrame(() => setTimeout(f, 0));
}

/** A regular expression matching exactly `name`. */
function exactly(name: string): string {
  return "^" + name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
}

function unitOf(type: string): string {
  return type.endsWith("space") ? "bytes" : "count";
}
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** "profiler 3.1 MiB of 48.2 MiB (tables 2.0, symbolizer 0.9, history 0.2)". */
export function memoryText(m: Memory): string {
  const mib = (b: number) => (b / (1 << 20)).toFixed(1);
  if (!m.profiler) return m.rss_anon === null ? "" : `process ${mib(m.rss_anon)} MiB (this source does not measure the profiler's share)`;
  const parts = m.profiler.parts.filter((p) => p.bytes >= 0.05 * (1 << 20)).map((p) => `${p.part} ${mib(p.bytes)}`);
  const of = m.rss_anon === null ? "" : ` of ${mib(m.rss_anon)} MiB`;
  return `profiler ${mib(m.profiler.total)} MiB${of}` + (parts.length ? ` (${parts.join(", ")})` : "");
}

class App {
  state = readState();
  tree?: Tree;
  snapshots?: Snapshots;
  zoomNode = 0;
  searchRe?: RegExp;
  flame = new FlameGraph($<HTMLCanvasElement>("flame"));
  /** The frame keyboard navigation and the selection bar act on. */
  selected = 0;
  /** Profiles opened from disk: [current, baseline?]. While set, trees come from them. */
  files?: { current: File; base?: File };

  async load() {
    this.snapshots = await getJson<Snapshots>("api/snapshots");
    if (this.snapshots?.source) $("source").textContent = `heap from the ${this.snapshots.source}`;
    const warnings = $("warnings");
    warnings.replaceChildren(
      ...(this.snapshots?.warnings ?? []).map((w) => {
        const p = document.createElement("p");
        p.textContent = `Warning: ${w}`;
        return p;
      }),
    );
    warnings.hidden = !warnings.children.length;
    void this.loadMemory();
    const snaps = this.snapshots?.snapshots ?? [];
    // Growth mode opens by default once there are points in time to compare. The history's first
    // snapshot is taken when the endpoint is mounted, usually before the service has done any
    // work: against it every stack would be "new". The second one is the default baseline.
    // Against a recent baseline (five snapshots back) what filled once, a cache after warm-up,
    // is unchanged, and what keeps growing is red; never against the first snapshot, though.
    if (this.state.base === "auto") this.state.base = snaps.length ? String(snaps[Math.max(Math.min(1, snaps.length - 1), snaps.length - 6)].id) : "";
    $<HTMLSelectElement>("type").value = this.state.type;
    $<HTMLSelectElement>("palette").value = this.state.palette;
    $<HTMLInputElement>("search").value = this.state.search;
    $<HTMLInputElement>("fold").checked = this.state.fold;
    $<HTMLInputElement>("retained").checked = this.state.retained;
    $<HTMLInputElement>("libraries").value = this.state.libraries;
    this.showGroupKeys([]);
    $<HTMLInputElement>("noise").value = String(+(this.state.noise * 100).toFixed(3));
    this.compileSearch();
    this.drawTimeline();
    await Promise.all([this.loadTree(), this.loadGrowing()]);
  }

  /** The "Group by" choices: the label keys the profile carries, and the one chosen. */
  showGroupKeys(keys: string[]) {
    const select = $<HTMLSelectElement>("group");
    const all = [...new Set([...keys, ...(this.state.group ? [this.state.group] : [])])].sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (all.join("\u001f") !== have.join("\u001f")) {
      select.replaceChildren(new Option("(none)", ""), ...all.map((k) => new Option(k, k)));
    }
    select.value = this.state.group;
    select.parentElement!.hidden = !all.length;
  }

  /** The header's line on the profiler's own memory. */
  async loadMemory() {
    const m = await getJson<Memory>("api/memory");
    $("memory").textContent = m ? memoryText(m) : "";
  }

  /** What the flame graph and the tests draw with. */
  get rects() {
    return this.flame.rects;
  }
  get canvas() {
    return this.flame.canvas;
  }
  get lastDrawMs() {
    return this.flame.lastDrawMs;
  }

  async loadTree() {
    const q = new URLSearchParams({ type: this.state.type, fold: this.state.fold ? "1" : "0" });
    for (const k of FILTERS) if (this.state[k]) q.set(k, this.state[k]);
    if (this.state.libraries) q.set("libraries", this.state.libraries);
    if (this.state.group) q.set("group", this.state.group);
    let json: TreeJson | undefined;
    if (this.files) {
      // Files from disk go to the server, which reads them as it reads its own profiles.
      if (!this.fileTypes.includes(this.state.type)) q.delete("type");
      try {
        json = await postTree(q, this.files.current, this.files.base);
      } catch (e) {
        $("status").textContent = `Could not open the file: ${(e as Error).message}`;
        return;
      }
      this.fileTypes = json.sample_types ?? [];
    } else {
      const window = this.retainedWindow();
      if (window) {
        q.set("since", String(window.since));
        if (window.until !== undefined) q.set("until", String(window.until));
      } else {
        q.set("at", this.state.at);
        if (this.state.base) q.set("base", this.state.base);
      }
      json = await getJson<TreeJson>("api/tree?" + q.toString());
    }
    if (!json) {
      $("status").textContent = `Could not load the profile: ${lastError || "the snapshot may have aged out"}`;
      return;
    }
    this.setTree(new Tree(json));
  }

  fileTypes: string[] = [];

  /**
   * In the retained view, the allocation times it keeps, in ms since the epoch: from the
   * baseline's time to the shown snapshot's (open-ended when that is "now").
   */
  retainedWindow(): { since: number; until?: number } | undefined {
    if (!this.state.retained) return undefined;
    const snaps = this.snapshots?.snapshots ?? [];
    const time = (id: string) => snaps.find((p) => String(p.id) === id)?.time_ms;
    const since = time(this.state.base) ?? snaps[0]?.time_ms ?? 0;
    return { since, until: this.state.at === "now" ? undefined : time(this.state.at) };
  }

  /** Opens one profile, or two (the older one as the baseline), from disk. */
  async openFiles(list: File[]) {
    if (!list.length) return;
    const [a, b] = [...list].sort((x, y) => x.lastModified - y.lastModified);
    this.files = b ? { current: b, base: a } : { current: a };
    this.fileTypes = [];
    this.state.zoom = [];
    await this.loadTree();
  }

  setTree(tree: Tree) {
    this.tree = tree;
    this.showGroupKeys(tree.json.label_keys ?? []);
    this.zoomNode = tree.find(this.state.zoom) ?? 0;
    this.selected = this.zoomNode;
    const root = tree.total(0);
    const unit = tree.json.unit;
    const window = this.files ? undefined : this.retainedWindow();
    const mode = window
      ? `${formatValue(root, unit)} allocated since ${clock(window.since)}${window.until ? ` until ${clock(window.until)}` : ""} and still in use`
      : tree.json.has_base
        ? `growth since snapshot ${this.state.base}: ${changeText({ total: root, base: tree.json.base[0], inBase: true }, unit)}`
        : `${formatValue(root, unit)} in total`;
    const source = this.files ? `${this.files.current.name}${this.files.base ? ` against ${this.files.base.name}` : ""}: ` : "";
    const filters = FILTERS.filter((k) => this.state[k]).map((k) => `${k} ${this.state[k]}`);
    $("status").textContent =
      `${source}${tree.json.type}: ${mode}` +
      (tree.json.merged_nodes ? ` (${tree.json.merged_nodes} small frames merged)` : "") +
      (tree.json.group ? ` — grouped by ${tree.json.group}` : "") +
      (filters.length ? ` — ${filters.join(", ")}` : "");
    $("legend").hidden = !tree.json.has_base;
    this.draw();
    afterFrame(() => this.drawTop());
  }

  async loadGrowing() {
    const q = new URLSearchParams({ type: this.state.type.startsWith("alloc") ? "inuse_space" : this.state.type });
    if (this.state.libraries) q.set("libraries", this.state.libraries);
    if (this.state.group) q.set("group", this.state.group);
    const g = await getJson<Growing>("api/growing?" + q.toString());
    const list = $("growing");
    list.replaceChildren();
    // One line per site: the stacks that reach the same function of the service's add up
    // (their errors in quadrature), named and focused by their fastest stack.
    const sites = new Map<string, { rate: number; variance: number; stacks: Growing["stacks"] }>();
    for (const s of g?.stacks ?? []) {
      const e = sites.get(s.site) ?? { rate: 0, variance: 0, stacks: [] };
      e.rate += s.rate_per_second;
      e.variance += s.stderr_per_second ** 2;
      e.stacks.push(s);
      sites.set(s.site, e);
    }
    const ranked = [...sites].sort((a, b) => b[1].rate - a[1].rate);
    // Sites growing at under 1% of the fastest one are noise next to it.
    const top = ranked[0]?.[1].rate ?? 0;
    const unit = unitOf(this.state.type);
    for (const [site, e] of ranked.filter(([, e]) => e.rate >= top / 100)) {
      const li = document.createElement("li");
      const stderr = Math.sqrt(e.variance);
      const noise = stderr > 0 ? ` ±${formatValue(stderr, unit)}` : "";
      const count = e.stacks.length > 1 ? ` (${e.stacks.length} stacks)` : "";
      // The labels the site's stacks were recorded under, when they were.
      const labels = g?.group ? [] : [...new Set(e.stacks.flatMap((s) => s.labels ?? []))];
      const shown = labels.length > 3 ? `${labels.slice(0, 3).join(", ")}, …` : labels.join(", ");
      li.textContent = `+${formatValue(e.rate, unit)}/s${noise}${count}  ${site}${shown ? `  [${shown}]` : ""}`;
      const ages = e.stacks[0].ages;
      if (ages?.pattern) {
        const line = document.createElement("span");
        line.className = "ages";
        line.textContent = agesText(ages, unit);
        li.appendChild(line);
      }
      // Grouped, an entry is a label value: the graph's first-level frame of that name.
      const frames = g?.group ? [site] : e.stacks[0].frames;
      li.title = [...frames, ...labels].join("\n");
      li.dataset.frames = JSON.stringify(frames);
      li.addEventListener("click", () => this.focusFrames(frames, site));
      list.appendChild(li);
    }
    if (!list.children.length) list.innerHTML = "<li class=muted>Nothing is growing.</li>";
    // The window (or tab) says what grows fastest, for someone who has several open.
    const fastest = ranked[0]?.[0];
    document.title = fastest ? `heapsight: ${fastest} growing` : "heapsight";
    this.growingSite = fastest;
    this.draw();
  }

  /** Zooms the graph on `site`, a frame of the stack `frames` (root first). */
  focusFrames(frames: string[], site: string) {
    if (!this.tree) return;
    const t = this.tree;
    const at = frames.lastIndexOf(site);
    // With the runtime folded, the stack's first frames are one `[...]` frame in the tree.
    const folded = t.children[0].filter((c) => t.name(c).startsWith("["));
    const lookUp = (n: number) => {
      const whole = t.find(frames.slice(0, n));
      if (whole !== undefined) return whole;
      for (const f of folded) {
        for (let k = 1; k < n; k++) {
          const node = t.find(frames.slice(k, n), f);
          if (node !== undefined) return node;
        }
      }
      return undefined;
    };
    // The tree may have merged the stack's tail away: fall back towards the root.
    for (let n = at + 1; n > 0; n--) {
      const node = lookUp(n);
      if (node !== undefined) {
        this.zoomTo(node);
        return;
      }
    }
  }

  drawTop() {
    const t = this.tree!;
    const unit = t.json.unit;
    const body = $("top").querySelector("tbody")!;
    body.replaceChildren();
    for (const r of topRows(t, this.state.top, !this.state.fold)) {
      const tr = document.createElement("tr");
      tr.dataset.name = r.name;
      for (const v of [r.name, formatValue(r.self, unit), formatValue(r.total, unit), t.json.has_base ? (r.change >= 0 ? "+" : "") + formatValue(r.change, unit) : ""]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      // Table to graph: a row highlights its function's frames.
      tr.addEventListener("click", () => {
        this.state.search = exactly(r.name);
        $<HTMLInputElement>("search").value = this.state.search;
    $<HTMLInputElement>("noise").value = String(+(this.state.noise * 100).toFixed(3));
        this.compileSearch();
        writeState(this.state);
        this.draw();
      });
      body.appendChild(tr);
    }
    $("top").querySelector("thead th:last-child")!.textContent = t.json.has_base ? "change" : "";
    // The column the table is sorted by, marked.
    for (const th of $("top").querySelectorAll<HTMLElement>("thead th[data-order]")) {
      th.classList.toggle("sorted", th.dataset.order === this.state.top);
    }
  }

  select(node: number) {
    if (!this.tree) return;
    this.selected = node;
    $("selected").textContent = node ? this.tree.name(node) : "(none)";
    this.draw();
    // Graph to table: the selected function's row is highlighted and scrolled into view.
    afterFrame(() => {
      for (const tr of $("top").querySelectorAll("tr.sel")) tr.classList.remove("sel");
      const row = [...$("top").querySelectorAll<HTMLTableRowElement>("tbody tr")].find((tr) => tr.dataset.name === this.tree?.name(node));
      if (row) {
        row.classList.add("sel");
        row.scrollIntoView({ block: "nearest" });
      }
    });
  }

  /** Focus, hide or callers of the selected function: a new tree from the server. */
  filterBy(kind: "focus" | "hide" | "callers") {
    if (!this.tree || !this.selected) return;
    const name = this.tree.name(this.selected);
    this.state[kind] = kind === "callers" ? name : exactly(name);
    this.state.zoom = [];
    writeState(this.state);
    this.loadTree();
  }

  clearFilters() {
    this.state.focus = this.state.hide = this.state.callers = "";
    this.state.zoom = [];
    writeState(this.state);
    this.loadTree();
  }

  zoomTo(node: number) {
    if (!this.tree) return;
    this.zoomNode = node;
    this.state.zoom = this.tree.path(node).slice(1).map((i) => this.tree!.name(i));
    writeState(this.state);
    this.select(node);
  }

  compileSearch() {
    try {
      this.searchRe = this.state.search ? new RegExp(this.state.search, "i") : undefined;
      $("search").classList.remove("bad");
    } catch {
      this.searchRe = undefined;
      $("search").classList.add("bad");
    }
  }

  /** The site growing fastest, once the growing list has loaded. */
  growingSite?: string;

  look(): Look {
    return { palette: PALETTES[this.state.palette] ?? PALETTES.standard, noise: this.state.noise, search: this.searchRe, growing: this.growingSite };
  }

  colorOf(i: number): string {
    return this.flame.colorOf(this.tree!, i, this.look());
  }

  draw() {
    const t = this.tree;
    if (!t) return;
    this.flame.draw(t, this.zoomNode, this.selected, this.look());
    this.drawCrumbs();
    const share = this.searchRe ? ` — search matches ${(t.matchedShare(this.searchRe) * 100).toFixed(1)}% of the total` : "";
    $("searchinfo").textContent = share;
  }

  drawCrumbs() {
    const t = this.tree!;
    const crumbs = $("crumbs");
    crumbs.replaceChildren();
    const path = t.path(this.zoomNode);
    path.forEach((i, k) => {
      // Long paths: the first two and the last four, with the rest folded into "…".
      if (path.length > 8 && k >= 2 && k < path.length - 4) {
        if (k === 2) {
          const more = document.createElement("button");
          more.textContent = `… ${path.length - 6} frames`;
          more.title = path.slice(2, -4).map((j) => t.name(j)).join("\n");
          crumbs.appendChild(more);
        }
        return;
      }
      const a = document.createElement("button");
      a.textContent = t.name(i);
      a.addEventListener("click", () => this.zoomTo(i));
      crumbs.appendChild(a);
    });
  }

  hit(ev: MouseEvent) {
    return this.flame.hit(ev);
  }

  tooltip(ev: MouseEvent) {
    const tip = $("tip");
    const r = this.hit(ev);
    if (!r || !this.tree) {
      tip.hidden = true;
      return;
    }
    const t = this.tree;
    const i = r.node;
    const unit = t.json.unit;
    const root = Math.max(1, t.total(0));
    const lines = [
      t.name(i),
      t.where(i),
      `total ${formatValue(t.total(i), unit)} (${((t.total(i) / root) * 100).toFixed(1)}%), self ${formatValue(t.json.self[i], unit)}`,
    ];
    if (t.json.has_base) lines.push(changeText({ total: t.total(i), base: t.json.base[i], inBase: t.json.in_base[i] }, unit));
    // Whose memory it is: the label sets that hold most of it.
    for (const [set, v] of t.json.labels?.[i] ?? []) {
      lines.push(`${t.json.strings[set]}: ${formatValue(v, unit)} (${((v / Math.max(1, t.total(i))) * 100).toFixed(0)}%)`);
    }
    tip.textContent = lines.filter(Boolean).join("\n");
    tip.hidden = false;
    tip.style.left = Math.min(ev.pageX + 12, window.innerWidth - 420) + "px";
    tip.style.top = ev.pageY + 12 + "px";
  }

  timeline = new Timeline($<HTMLCanvasElement>("timeline"), (base, at) => {
    if (base !== undefined) this.state.base = base;
    if (at !== undefined) this.state.at = at;
    writeState(this.state);
    this.drawTimeline();
    this.loadTree();
  });

  drawTimeline() {
    this.timeline.draw(this.snapshots?.snapshots ?? [], this.state);
  }
}

const app = new App();

$("type").addEventListener("change", (e) => {
  app.state.type = (e.target as HTMLSelectElement).value;
  writeState(app.state);
  app.loadTree();
  app.loadGrowing();
});
$("group").addEventListener("change", (e) => {
  app.state.group = (e.target as HTMLSelectElement).value;
  app.state.zoom = [];
  writeState(app.state);
  app.loadTree();
  app.loadGrowing();
});
$("palette").addEventListener("change", (e) => {
  app.state.palette = (e.target as HTMLSelectElement).value;
  writeState(app.state);
  app.draw();
});
$("search").addEventListener("input", (e) => {
  app.state.search = (e.target as HTMLInputElement).value;
  app.compileSearch();
  writeState(app.state);
  app.draw();
});
$("noise").addEventListener("input", (e) => {
  const pct = Number((e.target as HTMLInputElement).value);
  if (!Number.isFinite(pct) || pct < 0) return;
  app.state.noise = pct / 100;
  writeState(app.state);
  app.draw();
});
$<HTMLInputElement>("fold").addEventListener("change", (e) => {
  app.state.fold = (e.target as HTMLInputElement).checked;
  app.state.zoom = [];
  writeState(app.state);
  app.loadTree();
});
$<HTMLInputElement>("retained").addEventListener("change", (e) => {
  app.state.retained = (e.target as HTMLInputElement).checked;
  app.state.zoom = [];
  writeState(app.state);
  app.loadTree();
});
$<HTMLInputElement>("libraries").addEventListener("change", (e) => {
  app.state.libraries = (e.target as HTMLInputElement).value.replace(/\s+/g, "");
  writeState(app.state);
  app.loadTree();
  app.loadGrowing();
});
for (const th of document.querySelectorAll<HTMLElement>("#top thead th[data-order]")) {
  th.addEventListener("click", () => {
    app.state.top = th.dataset.order as "self" | "total" | "change";
    writeState(app.state);
    app.drawTop();
  });
}
$("reset").addEventListener("click", () => app.zoomTo(0));
$("focus").addEventListener("click", () => app.filterBy("focus"));
$("hide").addEventListener("click", () => app.filterBy("hide"));
$("callers").addEventListener("click", () => app.filterBy("callers"));
$("clear").addEventListener("click", () => app.clearFilters());
$<HTMLInputElement>("files").addEventListener("change", (e) => app.openFiles([...((e.target as HTMLInputElement).files ?? [])]));
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  app.openFiles([...(e.dataTransfer?.files ?? [])]);
});
$("now").addEventListener("click", () => {
  app.state.at = "now";
  app.files = undefined;
  writeState(app.state);
  app.load();
});
app.canvas.addEventListener("mousemove", (e) => app.tooltip(e));
app.canvas.addEventListener("mouseleave", () => ($("tip").hidden = true));
app.canvas.addEventListener("click", (e) => {
  const r = app.hit(e);
  if (r) app.zoomTo(r.node);
});
document.addEventListener("keydown", (e) => {
  const t = app.tree;
  if (t && document.activeElement !== $("search")) {
    // Arrows walk the graph: up to the caller, down to the largest callee, sideways to siblings.
    const siblings = t.children[t.json.parent[app.selected]];
    const at = siblings.indexOf(app.selected);
    const moves: Record<string, number | undefined> = {
      ArrowUp: app.selected ? t.json.parent[app.selected] : undefined,
      ArrowDown: t.children[app.selected][0],
      ArrowLeft: app.selected && at > 0 ? siblings[at - 1] : undefined,
      ArrowRight: app.selected && at + 1 < siblings.length ? siblings[at + 1] : undefined,
    };
    if (e.key in moves) {
      e.preventDefault();
      if (moves[e.key] !== undefined) app.select(moves[e.key]!);
      return;
    }
    if (e.key === "Enter") return app.zoomTo(app.selected);
  }
  if (e.key === "Escape") app.zoomTo(0);
  if (e.key === "/" && document.activeElement !== $("search")) {
    e.preventDefault();
    $("search").focus();
  }
  if (e.key === "Backspace" && document.activeElement === document.body && app.tree) app.zoomTo(app.tree.json.parent[app.zoomNode]);
});
window.addEventListener("resize", () => {
  app.draw();
  app.drawTimeline();
});

// A window for tests and benchmarks: the state, the tree, and what colour a frame was drawn in.
(window as unknown as { __heapsight: object }).__heapsight = {
  app,
  Tree,
  colorOf: (name: string) => {
    const i = app.tree?.findByName(name);
    return i === undefined ? undefined : app.colorOf(i);
  },
  zoomTo: (name: string) => {
    const i = app.tree?.findByName(name);
    if (i !== undefined) app.zoomTo(i);
    return i !== undefined;
  },
  loaded: app.load().then(() => true),
};
