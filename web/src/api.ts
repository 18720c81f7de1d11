// The JSON API of docs/ui-api.md: the answers' types, and the requests the UI makes. Nothing
// else in the UI talks to the server.

/** `GET api/snapshots`: the timeline. */
export interface Snapshots {
  interval_ms: number;
  capacity: number;
  bytes: number;
  /** Where the heap data comes from: "heapsight sampler", "jemalloc profiler". */
  source?: string;
  /** Why the last scheduled snapshot failed, if it did. */
  error?: string | null;
  /** What is wrong with how the source records, with the fix (stacks that come out short). */
  warnings?: string[];
  snapshots: SnapshotPoint[];
}

export interface SnapshotPoint {
  id: number;
  time_ms: number;
  inuse_space: number;
  inuse_objects: number;
  alloc_space: number;
  alloc_objects: number;
}

/** `GET api/memory`: the process's resident memory and the profiler's own share of it. */
export interface Memory {
  rss_anon: number | null;
  rss_file: number | null;
  /** `null` where the source does not measure the profiler's memory. */
  profiler: { total: number; parts: { part: string; bytes: number }[] } | null;
}

/** `GET api/growing`: the stacks growing fastest. */
export interface Growing {
  type: string;
  window_seconds: number;
  snapshots: number;
  /**
   * `site`: the stack's first frame of the service's own code, from the leaf;
   * `rate_per_second`: its sustained growth, `stderr_per_second` that rate's sampling error.
   */
  stacks: { stack: number; frames: string[]; site: string; labels?: string[]; rate_per_second: number; stderr_per_second: number; first: number; last: number; ages?: Ages | null }[];
  /** Set when the list is grouped by this label key: each entry's `site` is `key=value`. */
  group?: string;
}

/** When the blocks a growing stack holds now were allocated. */
export interface Ages {
  /** Held from before the window, and from each of its three parts, oldest first. */
  before: number;
  segments: number[];
  oldest_seconds: number;
  median_seconds: number;
  pattern: "every_age" | "young_only" | "old_only" | "mixed" | null;
}

/** `GET api/tree` and `POST api/tree`: a call tree, columnar. */
export interface TreeJson {
  type: string;
  unit: string;
  time_ms: number;
  has_base: boolean;
  merged_nodes: number;
  strings: string[];
  /** Per string: whether it names a frame of the service's own code. */
  user?: boolean[];
  name: number[];
  file: number[];
  line: number[];
  parent: number[];
  self: number[];
  total: number[];
  base: number[];
  in_base: boolean[];
  /** Per node, its largest label sets: [index into `strings` of "key=value, ...", part of `total`]. */
  labels?: [number, number][][];
  /** The label key the tree is grouped by: the root's children are its values, "key=value". */
  group?: string;
  /** The label keys the profile's samples carry. */
  label_keys?: string[];
  /** Only in answers to `POST api/tree`: the uploaded file's sample types. */
  sample_types?: string[];
}

/** The server's message for the last request that failed (profiling not enabled, ...). */
export let lastError = "";

/** A JSON answer, or undefined (with `lastError` set) when the server refused. */
export async function getJson<T>(path: string): Promise<T | undefined> {
  const r = await fetch(path);
  if (!r.ok) {
    lastError = `${r.status}: ${(await r.text()).trim()}`;
    return undefined;
  }
  return (await r.json()) as T;
}

/**
 * The tree of a profile file from disk, or of two (`base` first, as the baseline), read by the
 * server as it reads its own profiles. Throws with the server's message when it cannot.
 */
export async function postTree(query: URLSearchParams, current: File, base?: File): Promise<TreeJson> {
  const baseBytes = base ? await base.arrayBuffer() : new ArrayBuffer(0);
  if (baseBytes.byteLength) query.set("base_bytes", String(baseBytes.byteLength));
  const body = new Blob([baseBytes, await current.arrayBuffer()]);
  const r = await fetch("api/tree?" + query.toString(), { method: "POST", body });
  if (!r.ok) throw new Error(await r.text());
  return (await r.json()) as TreeJson;
}
