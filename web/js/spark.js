// Throughput over time (tokens of a job, jobs of a batch, per second) as an SVG sparkline.

const SVG_NS = "http://www.w3.org/2000/svg";
/** Counts are kept in buckets this wide; the rate at each is over the last second. */
const BUCKET_MS = 250;
const PER_SECOND = 1000 / BUCKET_MS;
/** The sparkline shows at least this many buckets (a short run starts from zero, not a dot). */
const MIN_POINTS = 4 * PER_SECOND;

/** Counts by the time they were seen, since the first one. */
export class Rate {
  constructor(windowS = 60) {
    this.points = windowS * PER_SECOND;
    this.start = null;
    this.buckets = new Map();
  }

  add(count = 1, nowMs = performance.now()) {
    if (this.start === null) this.start = nowMs;
    const bucket = Math.floor((nowMs - this.start) / BUCKET_MS);
    this.buckets.set(bucket, (this.buckets.get(bucket) || 0) + count);
  }

  /** Per second over the last second, at each bucket of the last `windowS` seconds up to now
   * (or `untilMs`), oldest first; [] before the first count. */
  series(untilMs = performance.now()) {
    if (this.start === null) return [];
    const now = Math.floor((untilMs - this.start) / BUCKET_MS);
    const values = [];
    for (let b = now - Math.max(this.points, MIN_POINTS) + 1; b <= now; b++) {
      let sum = 0;
      for (let k = b - PER_SECOND + 1; k <= b; k++) sum += this.buckets.get(k) || 0;
      values.push(sum);
    }
    // Nothing before the first count: start the line there (or MIN_POINTS back).
    const first = values.findIndex((v) => v > 0);
    return values.slice(Math.max(0, Math.min(first, values.length - MIN_POINTS)));
  }
}

/** Draw `values` into `svg` (a viewBox of 300 x 48) and say what it shows in its label and in
 * `caption`: the rate now and the peak, per second. */
export function drawSparkline(svg, values, caption, unit) {
  const [width, height] = [300, 48];
  svg.replaceChildren();
  if (values.length > 1) {
    const peak = Math.max(1, ...values);
    const step = width / (values.length - 1);
    const points = values
      .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / peak) * (height - 6)).toFixed(1)}`)
      .join(" ");
    const area = document.createElementNS(SVG_NS, "polygon");
    area.setAttribute("points", `0,${height} ${points} ${width},${height}`);
    area.setAttribute("class", "spark-area");
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("points", points);
    line.setAttribute("class", "spark-line");
    svg.append(area, line);
  }
  const seconds = Math.round(values.length / PER_SECOND);
  const text = values.length
    ? `${unit} per second: ${values[values.length - 1]} now, peak ${Math.max(...values)} (last ${seconds} s)`
    : `${unit} per second: nothing yet`;
  svg.setAttribute("aria-label", text);
  caption.textContent = text;
}
