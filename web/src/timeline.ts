// The timeline: in-use bytes of every snapshot in the history, with the baseline and the shown
// snapshot marked. A click picks the baseline; a shift-click, the snapshot to show.

import type { SnapshotPoint } from "./api";

const HEIGHT = 60;

export function drawTimeline(
  c: HTMLCanvasElement,
  snaps: SnapshotPoint[],
  marks: { base: string; at: string },
  pick: (id: string, asCurrent: boolean) => void,
) {
  const width = c.parentElement!.clientWidth;
  c.width = width;
  c.height = HEIGHT;
  const g = c.getContext("2d")!;
  g.clearRect(0, 0, width, HEIGHT);
  if (snaps.length < 1) {
    g.fillStyle = "#71717a";
    g.fillText("No snapshot history yet.", 8, 30);
    c.onclick = null;
    return;
  }
  const max = Math.max(1, ...snaps.map((s) => s.inuse_space));
  const x = (i: number) => (snaps.length === 1 ? width / 2 : (i / (snaps.length - 1)) * (width - 16) + 8);
  const y = (v: number) => HEIGHT - 8 - (v / max) * (HEIGHT - 16);
  g.strokeStyle = "#dc2626";
  g.lineWidth = 2;
  g.beginPath();
  snaps.forEach((s, i) => (i ? g.lineTo(x(i), y(s.inuse_space)) : g.moveTo(x(i), y(s.inuse_space))));
  g.stroke();
  snaps.forEach((s, i) => {
    const mark = String(s.id) === marks.base ? "#2563eb" : String(s.id) === marks.at ? "#111" : "";
    if (!mark) return;
    g.fillStyle = mark;
    g.fillRect(x(i) - 2, 0, 4, HEIGHT);
  });
  c.onclick = (ev) => {
    const i = Math.round(((ev.offsetX - 8) / Math.max(1, width - 16)) * (snaps.length - 1));
    pick(String(snaps[Math.max(0, Math.min(snaps.length - 1, i))].id), ev.shiftKey);
  };
}
