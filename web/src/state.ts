// What a view depends on, kept in the URL's fragment so that every view can be linked to.

export interface ViewState {
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

/** The filters that make the server build a different tree. */
export const FILTERS = ["focus", "hide", "callers"] as const;

export function readState(): ViewState {
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

export function writeState(s: ViewState) {
  const p = new URLSearchParams();
  p.set("type", s.type);
  p.set("at", s.at);
  p.set("base", s.base);
  if (s.zoom.length) p.set("zoom", s.zoom.join("\u001f"));
  if (s.search) p.set("search", s.search);
  if (s.palette !== "standard") p.set("palette", s.palette);
  if (s.noise !== 0.001) p.set("noise", String(s.noise));
  for (const k of FILTERS) if (s[k]) p.set(k, s[k]);
  history.replaceState(null, "", "#" + p.toString());
}
