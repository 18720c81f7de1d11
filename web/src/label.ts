// Frame labels that fit: what a narrow frame in the flame graph is called.

/**
 * `name` in at most `fit` characters, keeping what tells frames apart: generic arguments go
 * first, then leading path segments (`myapp::cache::Cache::insert` -> `Cache::insert`), and
 * only then the end is cut.
 */
export function shortLabel(name: string, fit: number): string {
  if (name.length <= fit) return name;
  // Generic arguments, innermost first: `Vec<T,A>::push` -> `Vec::push`.
  let short = name;
  for (let before = ""; before !== short && short.length > fit; ) {
    before = short;
    short = short.replace(/<[^<>]*>/g, (m, at: number) => (at === 0 ? m : ""));
  }
  // Leading path segments, outside any `<...>` at the start.
  while (short.length > fit && !short.startsWith("<")) {
    const cut = short.indexOf("::");
    if (cut < 0 || short.indexOf("::", cut + 2) < 0) break;
    short = short.slice(cut + 2);
  }
  return short.length > fit ? short.slice(0, Math.max(0, fit - 1)) + "…" : short;
}
