// Colours: growth against a baseline is what the UI is for, so colour means change.
//
// With a baseline: red for growth, blue for shrinkage, a distinct purple for stacks the baseline
// did not have, grey within the noise threshold; the stronger the change relative to the largest
// one, the deeper the colour. Without: warm flame-graph hues by name, so frames stay apart.

export interface Palette {
  grow: [number, number, number];
  shrink: [number, number, number];
  fresh: string;
  neutral: string;
}

export const PALETTES: Record<string, Palette> = {
  standard: { grow: [220, 38, 38], shrink: [37, 99, 235], fresh: "#9333ea", neutral: "#d4d4d8" },
  // Safe for red-green colour blindness: orange against blue-purple.
  colorblind: { grow: [230, 97, 0], shrink: [93, 58, 155], fresh: "#1b9e77", neutral: "#d4d4d8" },
};

export interface Change {
  total: number;
  base: number;
  inBase: boolean;
}

/**
 * The colour of a node in growth mode. `scale` is the largest absolute change in view;
 * `noise` is the smallest change that counts (in the tree's units).
 */
export function growthColor(c: Change, scale: number, noise: number, palette: Palette): string {
  const delta = c.total - c.base;
  if (!c.inBase && c.total > 0) return palette.fresh;
  if (Math.abs(delta) <= noise || scale <= 0) return palette.neutral;
  // Logarithmic, so that a change ten times smaller is still clearly coloured.
  const strength = Math.min(1, Math.log1p(Math.abs(delta)) / Math.log1p(scale));
  const [r, g, b] = delta > 0 ? palette.grow : palette.shrink;
  const mix = (v: number) => Math.round(255 - (255 - v) * (0.35 + 0.65 * strength));
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

/** A warm, stable hue for a name, as classic flame graphs colour frames. */
export function nameColor(name: string): string {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  const v = (h >>> 0) / 4294967296;
  return `hsl(${Math.round(10 + 35 * v)}, 85%, ${Math.round(58 + 12 * ((h >>> 8) & 255) / 255)}%)`;
}

/** Formats a value of `unit` for people: 1.5 MiB, 12.3k objects. */
export function formatValue(v: number, unit: string): string {
  const sign = v < 0 ? "-" : "";
  let a = Math.abs(v);
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let u = 0;
    while (a >= 1024 && u < units.length - 1) {
      a /= 1024;
      u++;
    }
    return `${sign}${u === 0 ? a.toFixed(0) : a.toFixed(1)} ${units[u]}`;
  }
  if (a >= 1e6) return `${sign}${(a / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${sign}${(a / 1e3).toFixed(1)}k`;
  return `${sign}${a.toFixed(0)}`;
}

/** "A → B (+Δ, +p%)" for a node's change since the baseline. */
export function changeText(c: Change, unit: string): string {
  const delta = c.total - c.base;
  const sign = delta >= 0 ? "+" : "";
  const pct = c.base > 0 ? `${sign}${((delta / c.base) * 100).toFixed(0)}%` : "new";
  return `${formatValue(c.base, unit)} → ${formatValue(c.total, unit)} (${sign}${formatValue(delta, unit)}, ${pct})`;
}
