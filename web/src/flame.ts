// The flame graph: a call tree drawn as an icicle on a canvas, coloured by growth against the
// tree's baseline (or by name without one), dimmed where a search does not match.

import { growthColor, nameColor, Palette } from "./color";
import { shortLabel } from "./label";
import { layout, Rect, Tree } from "./tree";

/** Pixels per row. */
export const ROW = 18;

/** How a frame is coloured: the palette and the share of the total that counts as noise. */
export interface Look {
  palette: Palette;
  noise: number;
  search?: RegExp;
  /** The function growing fastest: named in a callout where its frame is too narrow to say. */
  growing?: string;
}

/** A label drawn beside a frame too narrow to carry it. */
export interface Callout {
  node: number;
  text: string;
  x: number;
  y: number;
}

export class FlameGraph {
  /** What the last draw laid out, for hit-testing. */
  rects: Rect[] = [];
  lastDrawMs = 0;
  /** The largest change among the frames in view: the colour scale of growth mode. */
  changeScale = 1;
  /** The callout of the last draw, if it drew one. */
  callout?: Callout;

  constructor(readonly canvas: HTMLCanvasElement) {}

  colorOf(t: Tree, i: number, look: Look): string {
    if (i < 0) return "#e4e4e7";
    if (!t.json.has_base) return nameColor(t.name(i));
    const noise = look.noise * Math.max(1, t.json.total[0]);
    return growthColor({ total: t.json.total[i], base: t.json.base[i], inBase: t.json.in_base[i] }, this.changeScale, noise, look.palette);
  }

  /** Draws `t` zoomed on node `zoom`, with node `selected` outlined. */
  draw(t: Tree, zoom: number, selected: number, look: Look) {
    const started = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const width = this.canvas.parentElement!.clientWidth;
    this.rects = layout(t, zoom, width);
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
      const matched = !look.search || (r.node > 0 && look.search.test(t.name(r.node)));
      g.globalAlpha = matched ? 1 : 0.3;
      let c = colors.get(r.node);
      if (!c) {
        c = this.colorOf(t, r.node, look);
        colors.set(r.node, c);
      }
      g.fillStyle = c;
      g.fillRect(r.x, r.row * ROW, Math.max(r.w - 0.5, 0.5), ROW - 1);
      if (r.node >= 0 && r.w > 36) {
        g.fillStyle = "#111";
        r.label = shortLabel(t.name(r.node), Math.floor((r.w - 6) / 6.5));
        g.fillText(r.label, r.x + 3, r.row * ROW + ROW / 2);
      }
    }
    g.globalAlpha = 1;
    const sel = this.rects.find((r) => r.node === selected && selected > 0);
    if (sel) {
      g.strokeStyle = "#111";
      g.lineWidth = 2;
      g.strokeRect(sel.x + 1, sel.row * ROW + 1, Math.max(sel.w - 2, 1), ROW - 3);
    }
    this.callout = look.growing ? this.drawCallout(g, t, look.growing, width) : undefined;
    this.lastDrawMs = performance.now() - started;
  }

  /**
   * Names the widest frame of `name` in view when its own label cannot: a dark tag under it,
   * pointing up at it, so that the fastest-growing function is named on the first screen.
   */
  drawCallout(g: CanvasRenderingContext2D, t: Tree, name: string, width: number): Callout | undefined {
    let widest: Rect | undefined;
    for (const r of this.rects) if (r.node > 0 && t.name(r.node) === name && (!widest || r.w > widest.w)) widest = r;
    if (!widest || widest.label === name) return undefined;
    const text = `▲ growing fastest: ${shortLabel(name, 80)}`;
    const tw = g.measureText(text).width + 10;
    const x = Math.max(0, Math.min(widest.x, width - tw));
    const y = (widest.row + 1) * ROW + 2;
    g.fillStyle = "#18181b";
    g.fillRect(x, y, tw, ROW);
    g.fillStyle = "#fafafa";
    g.fillText(text, x + 5, y + ROW / 2);
    return { node: widest.node, text, x, y };
  }

  /** The frame under the mouse, if any. */
  hit(ev: MouseEvent): Rect | undefined {
    const box = this.canvas.getBoundingClientRect();
    const x = ev.clientX - box.left;
    const row = Math.floor((ev.clientY - box.top) / ROW);
    return this.rects.find((r) => r.row === row && r.node >= 0 && x >= r.x && x < r.x + r.w);
  }
}
