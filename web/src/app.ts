// heapscope's web UI: the heap as an icicle flame graph, coloured by growth since a baseline
// snapshot, with the timeline of snapshots and the list of stacks growing fastest.
//
// Talks to the server only through the JSON API of docs/ui-api.md, relative to this page.

import { changeText, formatValue, growthColor, nameColor, PALETTES } from "./color";
import { layout, Rect, Tree, TreeJson } from "./tree";

interface Snapshots {
  interval_ms: number;
  /** Where the heap data comes from: "heapscope sampler", "jemalloc profiler". */
  source?: string;
  /** Why the last scheduled snapshot failed, if it did. */
  error?: string | null;
  snapshots: { id: number; time_ms: number; inuse_space: number; inuse_objects: number; alloc_space: number; alloc_objects: number }[];
}

interface Growing {
  stacks: { stack: number; frames: string[]; rate_per_second: number; first: number; last: number }[];
}

/** Everything a view depends on; kept in the URL so that every view can be linked to. */
interface ViewState {
  type: string;
  at: string;
  base: string;
  zoom: string[];
  search: string;
  palette: string;
  noise: number;
  focus: string;
  hide: string;
  callers: string;
}

const ROW = 18;

/** Frames of the standard library and common runtime crates: a stack's site is below them. */
const LIBRARY = /^(<&?(dyn )?)?(std|core|alloc|tokio|hashbrown|futures\w*|hyper|axum|tower|mio|parking_lot|crossbeam\w*|rayon\w*|serde\w*)::/;

/** What to call a stack: its deepest frame in the application's own code. */
export function siteOf(frames: string[]): string {
  for (let i = frames.length - 1; i >= 0; i--) if (!LIBRARY.test(frames[i])) return frames[i];
  return frames[frames.length - 1] ?? "?";
}

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

function readState(): ViewState {
  const p = new URLSearchParams(location.hash.slice(1));
  return {
    type: p.get("type") || "inuse_space",
    at: p.get("at") || "now",
    base: p.get("base") ?? "auto",
    zoom: p.get("zoom") ? p.get("zoom")!.split("\u001f") : [],
    search: p.get("search") || "",
    palette: p.get("palette") || "standard",
    noise: Number(p.get("noise") || "0.001"),
    focus: p.get("focus") || "",
    hide: p.get("hide") || "",
    callers: p.get("callers") || "",
  };
}

function writeState(s: ViewState) {
  const p = new URLSearchParams();
  p.set("type", s.type);
  p.set("at", s.at);
  p.set("base", s.base);
  if (s.zoom.length) p.set("zoom", s.zoom.join("\u001f"));
  if (s.search) p.set("search", s.search);
  if (s.palette !== "standard") p.set("palette", s.palette);
  if (s.noise !== 0.001) p.set("noise", String(s.noise));
  for (const k of ["focus", "hide", "callers"] as const) if (s[k]) p.set(k, s[k]);
  history.replaceState(null, "", "#" + p.toString());
}

/** The server's message for the last request that failed (profiling not enabled, ...). */
let lastError = "";

async function getJson<T>(path: string): Promise<T | undefined> {
  const r = await fetch(path);
  if (!r.ok) {
    lastError = `${r.status}: ${(await r.text()).trim()}`;
    return undefined;
  }
  return (await r.json()) as T;
}

class App {
  state = readState();
  tree?: Tree;
  snapshots?: Snapshots;
  rects: Rect[] = [];
  zoomNode = 0;
  searchRe?: RegExp;
  lastDrawMs = 0;
  canvas = $<HTMLCanvasElement>("flame");
  /** The frame keyboard navigation and the selection bar act on. */
  selected = 0;
  /** Profiles opened from disk: [current, baseline?]. While set, trees come from them. */
  files?: { current: File; base?: File };

  async load() {
    this.snapshots = await getJson<Snapshots>("api/snapshots");
    if (this.snapshots?.source) $("source").textContent = `heap from the ${this.snapshots.source}`;
    const snaps = this.snapshots?.snapshots ?? [];
    // Growth mode opens by default once there are points in time to compare. The history's first
    // snapshot is taken when the endpoint is mounted, usually before the service has done any
    // work: against it every stack would be "new". The second one is the default baseline.
    if (this.state.base === "auto") this.state.base = snaps.length ? String(snaps[Math.min(1, snaps.length - 1)].id) : "";
    $<HTMLSelectElement>("type").value = this.state.type;
    $<HTMLSelectElement>("palette").value = this.state.palette;
    $<HTMLInputElement>("search").value = this.state.search;
    $<HTMLInputElement>("noise").value = String(+(this.state.noise * 100).toFixed(3));
    this.compileSearch();
    this.drawTimeline();
    await Promise.all([this.loadTree(), this.loadGrowing()]);
  }

  async loadTree() {
    const q = new URLSearchParams({ type: this.state.type });
    for (const k of ["focus", "hide", "callers"] as const) if (this.state[k]) q.set(k, this.state[k]);
    let json: TreeJson | undefined;
    if (this.files) {
      // Files from disk go to the server, which reads them as it reads its own profiles.
      const base = this.files.base ? await this.files.base.arrayBuffer() : new ArrayBuffer(0);
      if (base.byteLength) q.set("base_bytes", String(base.byteLength));
      if (!this.fileTypes.includes(this.state.type)) q.delete("type");
      const body = new Blob([base, await this.files.current.arrayBuffer()]);
      const r = await fetch("api/tree?" + q.toString(), { method: "POST", body });
      if (!r.ok) {
        $("status").textContent = `Could not open the file: ${await r.text()}`;
        return;
      }
      json = (await r.json()) as TreeJson;
      this.fileTypes = (json as unknown as { sample_types: string[] }).sample_types;
    } else {
      q.set("at", this.state.at);
      if (this.state.base) q.set("base", this.state.base);
      json = await getJson<TreeJson>("api/tree?" + q.toString());
    }
    if (!json) {
      $("status").textContent = `Could not load the profile: ${lastError || "the snapshot may have aged out"}`;
      return;
    }
    this.setTree(new Tree(json));
  }

  fileTypes: string[] = [];

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
    this.zoomNode = tree.find(this.state.zoom) ?? 0;
    this.selected = this.zoomNode;
    const root = tree.total(0);
    const unit = tree.json.unit;
    const mode = tree.json.has_base
      ? `growth since snapshot ${this.state.base}: ${changeText({ total: root, base: tree.json.base[0], inBase: true }, unit)}`
      : `${formatValue(root, unit)} in total`;
    const source = this.files ? `${this.files.current.name}${this.files.base ? ` against ${this.files.base.name}` : ""}: ` : "";
    const filters = ["focus", "hide", "callers"].filter((k) => this.state[k as "focus"]).map((k) => `${k} ${this.state[k as "focus"]}`);
    $("status").textContent =
      `${source}${tree.json.type}: ${mode}` +
      (tree.json.merged_nodes ? ` (${tree.json.merged_nodes} small frames merged)` : "") +
      (filters.length ? ` — ${filters.join(", ")}` : "");
    $("legend").hidden = !tree.json.has_base;
    this.draw();
    afterFrame(() => this.drawTop());
  }

  async loadGrowing() {
    const g = await getJson<Growing>(`api/growing?type=${this.state.type.startsWith("alloc") ? "inuse_space" : this.state.type}`);
    const list = $("growing");
    list.replaceChildren();
    // Stacks growing at under 1% of the fastest one are noise next to it.
    const top = g?.stacks[0]?.rate_per_second ?? 0;
    for (const s of (g?.stacks ?? []).filter((s) => s.rate_per_second >= top / 100)) {
      const li = document.createElement("li");
      li.textContent = `+${formatValue(s.rate_per_second, unitOf(this.state.type))}/s  ${siteOf(s.frames)}`;
      li.title = s.frames.join("\n");
      li.dataset.frames = JSON.stringify(s.frames);
      li.addEventListener("click", () => this.focusFrames(s.frames));
      list.appendChild(li);
    }
    if (!list.children.length) list.innerHTML = "<li class=muted>Nothing is growing.</li>";
  }

  /** Zooms the graph on the site (see `siteOf`) of the stack `frames` (root first). */
  focusFrames(frames: string[]) {
    if (!this.tree) return;
    const site = frames.lastIndexOf(siteOf(frames));
    // The tree may have merged the stack's tail away: fall back towards the root.
    for (let n = site + 1; n > 0; n--) {
      const node = this.tree.find(frames.slice(0, n));
      if (node !== undefined) {
        this.zoomTo(node);
        return;
      }
    }
  }

  /** The functions of the tree: self, total (recursion counted once) and change, largest first. */
  topRows(): { name: string; self: number; total: number; change: number }[] {
    const t = this.tree!;
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
    const rows: { name: string; self: number; total: number; change: number }[] = [];
    for (let f = 0; f < k; f++) {
      if (total[f] !== 0 || self[f] !== 0) rows.push({ name: j.strings[f], self: self[f], total: total[f], change: total[f] - base[f] });
    }
    const key = j.has_base ? (r: { change: number }) => r.change : (r: { self: number }) => r.self;
    return rows.sort((a, b) => key(b) - key(a)).slice(0, 100);
  }

  drawTop() {
    const t = this.tree!;
    const unit = t.json.unit;
    const body = $("top").querySelector("tbody")!;
    body.replaceChildren();
    for (const r of this.topRows()) {
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

  /** The largest change among the frames in view: the colour scale of growth mode. */
  changeScale = 1;

  colorOf(i: number): string {
    const t = this.tree!;
    if (i < 0) return "#e4e4e7";
    if (!t.json.has_base) return nameColor(t.name(i));
    const noise = this.state.noise * Math.max(1, t.json.total[0]);
    return growthColor({ total: t.json.total[i], base: t.json.base[i], inBase: t.json.in_base[i] }, this.changeScale, noise, PALETTES[this.state.palette] ?? PALETTES.standard);
  }

  draw() {
    const t = this.tree;
    if (!t) return;
    const started = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const width = this.canvas.parentElement!.clientWidth;
    this.rects = layout(t, this.zoomNode, width);
    let scale = Math.abs(t.json.total[0] - t.json.base[0]);
    for (const r of this.rects) if (r.node > 0) scale = Math.max(scale, Math.abs(t.json.total[r.node] - t.json.base[r.node]));
    this.changeScale = Math.max(1, scale);
    // One height per tree (no view needs more rows than its depth), so zooming never resizes.
    const rows = Math.max(t.maxDepth + 1, this.rects.reduce((m, r) => Math.max(m, r.row), 0) + 1);
    // Resizing a canvas reallocates it: only when the size really changes.
    const [pw, ph] = [Math.round(width * dpr), Math.round(rows * ROW * dpr)];
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvas.style.width = width + "px";
      this.canvas.style.height = rows * ROW + "px";
    }
    const g = this.canvas.getContext("2d")!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, rows * ROW);
    g.font = "12px system-ui, sans-serif";
    g.textBaseline = "middle";
    const colors = new Map<number, string>();
    for (const r of this.rects) {
      const matched = !this.searchRe || (r.node > 0 && this.searchRe.test(t.name(r.node)));
      g.globalAlpha = matched ? 1 : 0.3;
      let c = colors.get(r.node);
      if (!c) {
        c = this.colorOf(r.node);
        colors.set(r.node, c);
      }
      g.fillStyle = c;
      g.fillRect(r.x, r.row * ROW, Math.max(r.w - 0.5, 0.5), ROW - 1);
      if (r.node >= 0 && r.w > 36) {
        g.fillStyle = "#111";
        const label = t.name(r.node);
        const fit = Math.floor((r.w - 6) / 6.5);
        g.fillText(label.length > fit ? label.slice(0, Math.max(0, fit - 1)) + "…" : label, r.x + 3, r.row * ROW + ROW / 2);
      }
    }
    g.globalAlpha = 1;
    const sel = this.rects.find((r) => r.node === this.selected && this.selected > 0);
    if (sel) {
      g.strokeStyle = "#111";
      g.lineWidth = 2;
      g.strokeRect(sel.x + 1, sel.row * ROW + 1, Math.max(sel.w - 2, 1), ROW - 3);
    }
    this.lastDrawMs = performance.now() - started;
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

  hit(ev: MouseEvent): Rect | undefined {
    const box = this.canvas.getBoundingClientRect();
    const x = ev.clientX - box.left;
    const row = Math.floor((ev.clientY - box.top) / ROW);
    return this.rects.find((r) => r.row === row && r.node >= 0 && x >= r.x && x < r.x + r.w);
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
    tip.textContent = lines.filter(Boolean).join("\n");
    tip.hidden = false;
    tip.style.left = Math.min(ev.pageX + 12, window.innerWidth - 420) + "px";
    tip.style.top = ev.pageY + 12 + "px";
  }

  drawTimeline() {
    const c = $<HTMLCanvasElement>("timeline");
    const snaps = this.snapshots?.snapshots ?? [];
    const width = c.parentElement!.clientWidth;
    const height = 60;
    c.width = width;
    c.height = height;
    const g = c.getContext("2d")!;
    g.clearRect(0, 0, width, height);
    if (snaps.length < 1) {
      g.fillStyle = "#71717a";
      g.fillText("No snapshot history yet.", 8, 30);
      return;
    }
    const max = Math.max(1, ...snaps.map((s) => s.inuse_space));
    const x = (i: number) => (snaps.length === 1 ? width / 2 : (i / (snaps.length - 1)) * (width - 16) + 8);
    const y = (v: number) => height - 8 - (v / max) * (height - 16);
    g.strokeStyle = "#dc2626";
    g.lineWidth = 2;
    g.beginPath();
    snaps.forEach((s, i) => (i ? g.lineTo(x(i), y(s.inuse_space)) : g.moveTo(x(i), y(s.inuse_space))));
    g.stroke();
    snaps.forEach((s, i) => {
      const mark = String(s.id) === this.state.base ? "#2563eb" : String(s.id) === this.state.at ? "#111" : "";
      if (!mark) return;
      g.fillStyle = mark;
      g.fillRect(x(i) - 2, 0, 4, height);
    });
    c.onclick = (ev) => {
      const i = Math.round(((ev.offsetX - 8) / Math.max(1, width - 16)) * (snaps.length - 1));
      const id = String(snaps[Math.max(0, Math.min(snaps.length - 1, i))].id);
      // Click: the baseline; shift-click: the snapshot to show.
      if (ev.shiftKey) this.state.at = id;
      else this.state.base = id;
      writeState(this.state);
      this.drawTimeline();
      this.loadTree();
    };
  }
}

const app = new App();

$("type").addEventListener("change", (e) => {
  app.state.type = (e.target as HTMLSelectElement).value;
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
(window as unknown as { __heapscope: object }).__heapscope = {
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
