// The timeline: in-use bytes of every snapshot in the history against time, with a bytes scale,
// time labels, and marks for the baseline (blue) and the snapshot shown (black). Hovering reads
// a snapshot's time and value; a click picks the baseline, a shift-click the snapshot to show,
// and a drag picks both at once: the window from its start to its end.

import type { SnapshotPoint } from "./api";
import { clock } from "./ages";
import { formatValue } from "./color";

const HEIGHT = 80;
/** Room for the bytes scale on the left and the time labels below. */
const LEFT = 64;
const RIGHT = 8;
const TOP = 6;
const BOTTOM = 18;

/** What the timeline marks: snapshot ids, `"now"` for a fresh snapshot. */
export interface Marks {
  base: string;
  at: string;
}

export class Timeline {
  private snaps: SnapshotPoint[] = [];
  private marks: Marks = { base: "", at: "now" };
  private hover?: number;
  private dragFrom?: number;
  /** What the last draw wrote on the canvas, for tests: its scale and its time labels. */
  labels: string[] = [];

  /**
   * A timeline on `canvas`. `pick(base, at)` is called with the snapshot ids the user chose;
   * either may be undefined when only the other was picked, and `at` is `"now"` for the latest.
   */
  constructor(
    readonly canvas: HTMLCanvasElement,
    private pick: (base: string | undefined, at: string | undefined) => void,
  ) {
    canvas.addEventListener("mousemove", (ev) => {
      this.hover = this.indexAt(ev.offsetX);
      this.draw(this.snaps, this.marks);
    });
    canvas.addEventListener("mouseleave", () => {
      this.hover = undefined;
      this.dragFrom = undefined;
      this.draw(this.snaps, this.marks);
    });
    canvas.addEventListener("mousedown", (ev) => (this.dragFrom = this.indexAt(ev.offsetX)));
    canvas.addEventListener("mouseup", (ev) => {
      const from = this.dragFrom;
      this.dragFrom = undefined;
      const to = this.indexAt(ev.offsetX);
      if (from === undefined || to === undefined) return;
      if (from !== to) {
        // A drag: the window from its earlier end to its later one.
        const [a, b] = from < to ? [from, to] : [to, from];
        this.pick(this.idOf(a), b === this.snaps.length - 1 ? "now" : this.idOf(b));
      } else if (ev.shiftKey) {
        this.pick(undefined, this.idOf(to));
      } else {
        this.pick(this.idOf(to), undefined);
      }
    });
  }

  private idOf(i: number): string {
    return String(this.snaps[i].id);
  }

  /** The canvas's width on the page: 100% of its box, as the stylesheet sets it. */
  private width(): number {
    return this.canvas.clientWidth || this.canvas.parentElement!.clientWidth;
  }

  private x(i: number): number {
    const n = this.snaps.length;
    const span = this.width() - LEFT - RIGHT;
    return n === 1 ? LEFT + span / 2 : LEFT + (i / (n - 1)) * span;
  }

  /** The snapshot nearest the canvas position `px`. */
  private indexAt(px: number): number | undefined {
    const n = this.snaps.length;
    if (!n) return undefined;
    const span = Math.max(1, this.width() - LEFT - RIGHT);
    const i = Math.round(((px - LEFT) / span) * (n - 1));
    return Math.max(0, Math.min(n - 1, i));
  }

  draw(snaps: SnapshotPoint[], marks: Marks) {
    this.snaps = snaps;
    this.marks = marks;
    const c = this.canvas;
    const width = this.width();
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.round(width * dpr);
    c.height = Math.round(HEIGHT * dpr);
    c.style.height = HEIGHT + "px";
    const g = c.getContext("2d")!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, HEIGHT);
    g.font = "11px system-ui, sans-serif";
    this.labels = [];
    if (snaps.length < 1) {
      g.fillStyle = "#71717a";
      g.fillText("No snapshot history yet.", LEFT, HEIGHT / 2);
      return;
    }
    const max = Math.max(1, ...snaps.map((s) => s.inuse_space));
    const plotH = HEIGHT - TOP - BOTTOM;
    const y = (v: number) => TOP + plotH - (v / max) * plotH;
    const text = (s: string, x: number, yy: number, align: CanvasTextAlign) => {
      g.textAlign = align;
      g.fillText(s, x, yy);
      this.labels.push(s);
    };

    // The bytes scale: the top and the middle of the plot, with faint rules.
    g.strokeStyle = "#e4e4e7";
    g.lineWidth = 1;
    g.fillStyle = "#52525b";
    g.textBaseline = "middle";
    for (const v of [max, max / 2, 0]) {
      g.beginPath();
      g.moveTo(LEFT, y(v));
      g.lineTo(width - RIGHT, y(v));
      g.stroke();
      text(formatValue(v, "bytes"), LEFT - 6, y(v), "right");
    }
    // Time labels: the first snapshot, the last, and about one every 160 px between.
    g.textBaseline = "alphabetic";
    const step = Math.max(1, Math.round((snaps.length - 1) / Math.max(1, Math.floor((width - LEFT) / 160))));
    for (let i = 0; i < snaps.length; i += step) {
      if (i + step / 2 >= snaps.length - 1 && i !== 0) continue;
      text(clock(snaps[i].time_ms), this.x(i), HEIGHT - 4, i === 0 ? "left" : "center");
    }
    text(clock(snaps[snaps.length - 1].time_ms), this.x(snaps.length - 1), HEIGHT - 4, "right");

    // The window being dragged, shaded.
    if (this.dragFrom !== undefined && this.hover !== undefined && this.dragFrom !== this.hover) {
      const [a, b] = [Math.min(this.dragFrom, this.hover), Math.max(this.dragFrom, this.hover)];
      g.fillStyle = "rgba(37, 99, 235, 0.12)";
      g.fillRect(this.x(a), TOP, this.x(b) - this.x(a), plotH);
    }
    // The heap in use.
    g.strokeStyle = "#dc2626";
    g.lineWidth = 2;
    g.beginPath();
    snaps.forEach((s, i) => (i ? g.lineTo(this.x(i), y(s.inuse_space)) : g.moveTo(this.x(i), y(s.inuse_space))));
    g.stroke();
    // The baseline and the snapshot shown.
    const at = marks.at === "now" ? String(snaps[snaps.length - 1].id) : marks.at;
    snaps.forEach((s, i) => {
      const id = String(s.id);
      const color = id === marks.base ? "#2563eb" : id === at ? "#111" : "";
      if (!color) return;
      g.fillStyle = color;
      g.fillRect(this.x(i) - 1.5, TOP, 3, plotH);
    });
    // Hover: the snapshot's time and value.
    if (this.hover !== undefined) {
      const s = snaps[this.hover];
      const hx = this.x(this.hover);
      g.fillStyle = "#18181b";
      g.beginPath();
      g.arc(hx, y(s.inuse_space), 3.5, 0, 2 * Math.PI);
      g.fill();
      const label = `${clock(s.time_ms)}  ${formatValue(s.inuse_space, "bytes")} in use`;
      g.textBaseline = "top";
      const w = g.measureText(label).width + 8;
      const lx = Math.min(Math.max(LEFT, hx + 6), width - RIGHT - w);
      g.fillStyle = "rgba(24, 24, 27, 0.85)";
      g.fillRect(lx, TOP, w, 16);
      g.fillStyle = "#fafafa";
      text(label, lx + 4, TOP + 2, "left");
    }
  }
}
