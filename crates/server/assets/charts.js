// The dashboard's history charts, served at /assets/charts.js: a chart per numeric field of
// an opened topic and a sparkline per numeric field in the topic list, both built from the
// hub's `series` (GET /api/history/{topic}?field=&step=&from=&to=) and extended live by the
// page with each change it gets on its WebSocket.
//
// Drawn with uPlot (the global `uPlot`, from /assets/uplot.min.js; why uPlot: see
// crates/server/src/assets.rs). A hub without the history API (an older one), or a topic
// whose history is not kept (404), gets no chart and no error: the page asks once and
// remembers the answer.
//
// `window.statecastCharts()` lists every live chart with its query, data and where each
// point is drawn, for the browser tests (tests/browser/charts.test.mjs) and for debugging.

/** The ranges a topic's charts can show, in ms. */
export const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const SPARK_RANGE = RANGES["15m"];
/** Points across a chart (at most), and across a sparkline. */
const CHART_POINTS = 300;
const SPARK_POINTS = 60;
/** Steps a series may use, in seconds: the smallest one giving at most the points wanted. */
const STEPS = [1, 2, 3, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
/** How many numeric fields get a chart (an opened topic) or a sparkline (the list). */
export const MAX_CHARTS = 24;
export const MAX_SPARKS = 6;
/** History requests in flight at once (sparklines load as their cards come into view). */
const CONCURRENCY = 3;

const LINE = "#2563eb";
const BAND_LINE = "rgba(37, 99, 235, 0.3)";
const BAND_FILL = "rgba(37, 99, 235, 0.1)";

/** The step (ms) for a series over `rangeMs` with at most `points` points. */
export function stepFor(rangeMs, points = CHART_POINTS) {
  const wanted = rangeMs / points / 1000;
  return (STEPS.find((s) => s >= wanted) ?? STEPS[STEPS.length - 1]) * 1000;
}

/** The JSON pointers of the numeric leaves of `state` (`/battery`, `/rf/level`, `/levels/0`),
 * in the state's order. */
export function numericFields(state, prefix = "", out = []) {
  if (typeof state === "number" && Number.isFinite(state)) {
    if (prefix) out.push(prefix);
  } else if (state !== null && typeof state === "object") {
    for (const [key, value] of Object.entries(state)) {
      numericFields(value, prefix + "/" + key.replaceAll("~", "~0").replaceAll("/", "~1"), out);
    }
  }
  return out;
}

/** The value at JSON pointer `pointer` in `state`, or undefined. */
export function valueAt(state, pointer) {
  let value = state;
  for (const raw of pointer.split("/").slice(1)) {
    if (value === null || typeof value !== "object") return undefined;
    value = value[raw.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return value;
}

/** The hub's history API as the dashboard uses it: whether the hub has it at all (asked
 * once, from its OpenAPI description), which topics keep none (their first answer is a
 * 404; asked one request at a time per topic until one has answered), and a bounded queue
 * of `series` requests. */
export class History {
  constructor(token) {
    this.headers = token ? { authorization: `Bearer ${token}` } : {};
    this.none = new Set(); // topics whose history the hub does not keep
    this.some = new Set(); // topics whose history it answered
    this.probes = new Map(); // topic -> the first request for it, while in flight
    this.queue = [];
    this.running = 0;
    this.check();
  }

  /** Asks the hub's OpenAPI description whether it has the history API (again, after the
   * hub could not be asked). */
  check() {
    this.known = false; // whether the hub was asked yet
    this.off = false; // known to have no history API
    this.available = fetch("/api/openapi.json")
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => Object.keys(doc?.paths ?? {}).some((p) => p.startsWith("/api/history/")))
      .catch(() => false)
      .then((on) => {
        this.known = true;
        this.off = !on;
        return on;
      });
  }

  /** The query of a series of `field` of `topic` over [`from`, `to`] (Unix ms) by `stepMs`. */
  static query(topic, field, from, to, stepMs) {
    const path = topic.split("/").map(encodeURIComponent).join("/");
    return `/api/history/${path}?field=${encodeURIComponent(field)}&step=${stepMs / 1000}s&from=${from}&to=${to}`;
  }

  /** The points of the series at `query` (see [`History.query`]), or null when there are
   * none to show: no history for the topic (remembered), a refused field, the hub away. */
  async series(topic, query) {
    if (!(await this.available)) return null;
    // Until the hub has answered for this topic, one request at a time: a topic without
    // history costs one 404, not one per field.
    while (!this.some.has(topic) && this.probes.has(topic)) await this.probes.get(topic);
    if (this.none.has(topic)) return null;
    const answer = new Promise((resolve) => {
      this.queue.push({ topic, query, resolve });
      this.next();
    });
    if (!this.some.has(topic)) {
      this.probes.set(topic, answer.then(() => this.probes.delete(topic)));
    }
    return answer;
  }

  next() {
    while (this.running < CONCURRENCY && this.queue.length > 0) {
      const job = this.queue.shift();
      this.running++;
      this.run(job).then(job.resolve, () => job.resolve(null)).finally(() => {
        this.running--;
        this.next();
      });
    }
  }

  async run({ topic, query }) {
    const r = await fetch(query, { headers: this.headers });
    if (r.status === 404) this.none.add(topic);
    if (!r.ok) return null;
    const body = await r.json();
    if (!Array.isArray(body.points)) return null;
    this.some.add(topic);
    return body.points;
  }
}

const charts = new Set(); // every live Chart, for the debug hook
window.statecastCharts = () => [...charts].map((c) => c.describe());

/** One series of one numeric field of a topic, drawn by uPlot into `el`: a full chart (axes,
 * legend, the avg line over a min–max band) or a sparkline (the avg line alone). Loaded
 * from the hub's history, then extended by [`Chart.push`] with each live value. */
export class Chart {
  constructor(el, { history, topic, field, rangeMs, spark = false }) {
    Object.assign(this, { el, history, topic, field, rangeMs, spark });
    this.stepMs = stepFor(rangeMs, spark ? SPARK_POINTS : CHART_POINTS);
    this.data = spark ? [[], []] : [[], [], [], []];
    this.end = Date.now(); // the window is [end - rangeMs, end]
    this.loaded = false;
    this.pending = []; // live values that came while the history was loading
    this.plot = new uPlot(this.options(), this.data, el);
    charts.add(this);
  }

  options() {
    // A chart shows its whole range, ending now; a sparkline (no axes) the shape of what it
    // has, edge to edge, however little of the 15 minutes that is (one point: a dot at the
    // right end).
    const range = () => [(this.end - this.rangeMs) / 1000, this.end / 1000];
    const fit = (_u, min, max) => (min === max ? [min - 60, max] : [min, max]);
    const common = {
      width: this.width(),
      height: this.spark ? 28 : 180,
      scales: { x: this.spark ? { time: false, range: fit } : { time: true, range } },
    };
    if (this.spark) {
      return {
        ...common,
        padding: [3, 2, 3, 2],
        cursor: { show: false },
        select: { show: false },
        legend: { show: false },
        axes: [{ show: false }, { show: false }],
        series: [{}, {
          stroke: LINE,
          width: 1.5,
          points: { show: (u) => u.data[0].length === 1, size: 5, fill: LINE },
        }],
      };
    }
    return {
      ...common,
      legend: { live: true },
      axes: [{}, { size: 56 }],
      series: [
        {},
        { label: this.field, stroke: LINE, width: 2 },
        { label: "min", stroke: BAND_LINE, width: 1, points: { show: false } },
        { label: "max", stroke: BAND_LINE, width: 1, points: { show: false } },
      ],
      bands: [{ series: [3, 2], fill: BAND_FILL }],
    };
  }

  width() {
    return this.spark ? 120 : Math.max(200, this.el.clientWidth || 600);
  }

  /** (Re)loads the window ending now from the hub. Resolves to false when there is no
   * history to show (the caller removes the chart). */
  async load() {
    const to = Date.now();
    // Steps start at multiples of the step, so the same window always asks the same query.
    const from = Math.floor((to - this.rangeMs) / this.stepMs) * this.stepMs;
    this.query = History.query(this.topic, this.field, from, to, this.stepMs);
    this.loaded = false;
    const points = await this.history.series(this.topic, this.query);
    if (!charts.has(this)) return false; // destroyed meanwhile
    if (points === null) return false;
    const x = [], avg = [], min = [], max = [];
    for (const p of points) {
      if (typeof p.t !== "number" || typeof p.avg !== "number") continue;
      x.push(p.t / 1000);
      avg.push(p.avg);
      min.push(typeof p.min === "number" ? p.min : p.avg);
      max.push(typeof p.max === "number" ? p.max : p.avg);
    }
    this.data = this.spark ? [x, avg] : [x, avg, min, max];
    this.end = Math.max(to, this.end);
    this.loaded = true;
    const pending = this.pending.filter(([t]) => t > to);
    this.pending = [];
    for (const [t, v] of pending) this.append(t, v);
    this.redraw();
    return true;
  }

  /** A live value of the field at `t` (Unix ms): appended, and the window slides to it. */
  push(t, value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    if (!this.loaded) {
      this.pending.push([t, value]);
      return;
    }
    this.append(t, value);
    this.redraw();
  }

  append(t, value) {
    const x = this.data[0];
    const at = Math.max(t, this.end, (x[x.length - 1] ?? 0) * 1000 + 1); // x must grow
    this.end = at;
    x.push(at / 1000);
    for (let i = 1; i < this.data.length; i++) this.data[i].push(value);
    // Points that left the window (one kept, so the line enters from the left edge).
    const start = (this.end - this.rangeMs) / 1000;
    let drop = 0;
    while (drop + 1 < x.length && x[drop + 1] <= start) drop++;
    if (drop > 0) this.data = this.data.map((s) => s.slice(drop));
  }

  /** Redraws at the next frame, however many values came in this one. */
  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (charts.has(this)) this.plot.setData(this.data);
    });
  }

  resize() {
    if (!this.spark) this.plot.setSize({ width: this.width(), height: 180 });
  }

  destroy() {
    charts.delete(this);
    cancelAnimationFrame(this.frame);
    this.plot.destroy();
  }

  /** For tests and debugging: the query, whether its answer is drawn, the data drawn (x
   * in Unix seconds, then avg[, min, max]), where each avg point is (CSS pixels from the
   * top left corner of the plotting area, the `.u-over` element) and the x scale shown. */
  describe() {
    const [x, avg] = this.plot.data;
    const drawn = [];
    for (let i = 0; i < x.length; i++) {
      if (avg[i] == null) continue;
      drawn.push([this.plot.valToPos(x[i], "x"), this.plot.valToPos(avg[i], "y")]);
    }
    return {
      kind: this.spark ? "spark" : "chart",
      topic: this.topic,
      field: this.field,
      query: this.query ?? null,
      loaded: this.loaded && !this.frame, // and drawn: no redraw pending
      data: this.plot.data.map((s) => [...s]),
      drawn,
      plot: { width: this.plot.bbox.width / devicePixelRatio, height: this.plot.bbox.height / devicePixelRatio },
      x: [this.plot.scales.x.min, this.plot.scales.x.max],
    };
  }
}

/** A sparkline chart of `field` of `topic` over the last 15 minutes. */
export function sparkline(el, history, topic, field) {
  return new Chart(el, { history, topic, field, rangeMs: SPARK_RANGE, spark: true });
}
