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
  /** Fold the runtime's frames at each stack's root into one, and hide plumbing in the top table. */
  fold: boolean;
  /** More crates that are not the service's own code, comma-separated ("hyper,tower"). */
  libraries: string;
  /** The retained view: only the blocks in use now allocated from the baseline to the shown snapshot. */
  retained: boolean;
  /** The top table's order. */
  top: "self" | "total" | "change";
  /** A label key: the flame graph's first level and the growing list are its values. */
  group: string;
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
    fold: p.get("fold") !== "0",
    libraries: p.get("lib") || "",
    retained: p.get("retained") === "1",
    top: (["self", "total", "change"].find((o) => o === p.get("top")) ?? "self") as ViewState["top"],
    group: p.get("group") || "",
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
  if (!s.fold) p.set("fold", "0");
  if (s.libraries) p.set("lib", s.libraries);
  if (s.retained) p.set("retained", "1");
  if (s.top !== "self") p.set("top", s.top);
  if (s.group) p.set("group", s.group);
  history.replaceState(null, "", "#" + p.toString());
}
