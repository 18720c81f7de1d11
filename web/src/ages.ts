// Words for when a growing site's blocks were allocated (the `ages` of api/growing), and for
// times of day, shared by the growing list, the status line and the timeline.

import type { Ages } from "./api";
import { formatValue } from "./color";

/** A time of day, 24-hour, from ms since the epoch. */
export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** A duration in seconds as "45 s", "12 min", "3.5 h", "2.0 d". */
export function duration(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

const PATTERNS: Record<NonNullable<Ages["pattern"]>, string> = {
  every_age: "holds blocks of every age: what it allocates stays",
  young_only: "holds only recent blocks: churn, or a vector or map that moves into a new block as it grows",
  old_only: "holds only blocks from before the window: filled earlier",
  mixed: "holds blocks of mixed ages",
};

/** One line on a site's ages: its pattern, its oldest and median block, and how much is young. */
export function agesText(a: Ages, unit: string): string {
  if (!a.pattern) return "";
  const held = a.before + a.segments.reduce((x, y) => x + y, 0);
  const recent = a.segments[a.segments.length - 1] ?? 0;
  return (
    `${PATTERNS[a.pattern]} (oldest ${duration(a.oldest_seconds)}, median ${duration(a.median_seconds)}; ` +
    `${formatValue(recent, unit)} of ${formatValue(held, unit)} from the last third of the window)`
  );
}
