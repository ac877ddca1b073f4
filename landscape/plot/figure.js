// The one figure definition of a surface: the web page draws it (served at /vendor/figure.js)
// and `landscape plot` embeds this file in its standalone HTML export, so both show the same
// scales, clamp, labels and title. No imports and no DOM access: plain data in, Plotly out.
// landscape/plot/scale.py reads LOSS_CAP, LOG_DECADES, CAPPED_COLOR and VIRIDIS from this file
// for the Python figures: keep them `export const NAME = <literal>;`.

// Far from the minimum, filter-normalized losses of deep plain nets reach 1e8 and flatten
// everything else to a plane. Li et al. (2018) draw losses up to 10: so does a linear view
// unless a range is set; values above are drawn *at* the cap, in grey, and the figure says so.
export const LOSS_CAP = 10;
// A loss whose values span this many decades is drawn on a log scale unless the user says not.
export const LOG_DECADES = 2;
export const CAPPED_COLOR = "#9a9a9a";

// Viridis at 9 stops (matplotlib): Plotly's colour scale and the canvas previews.
export const VIRIDIS = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
];

const LIGHT = { text: "#1d2433", muted: "#5b6474", grid: "#d8dde6", font: "system-ui, sans-serif", accent: "#3563e9" };

/** Plotly without any outbound link: no cloud button, no "edit" link, no wheel capture. */
export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  showLink: false,
  showSendToCloud: false,
  showEditInChartStudio: false,
  scrollZoom: false, // the wheel scrolls the page; zoom with the mode bar or a drag
  modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud", "editInChartStudio", "lasso2d", "select2d"],
};

/**
 * Let the mouse wheel scroll the page over `div`. Plotly's 3D camera takes every wheel event
 * (and cancels the page's scroll) even with scrollZoom off, so wheel events are stopped on
 * their way down to its canvas; zoom stays on the mode bar and on drags.
 */
export function leaveWheelToPage(div) {
  if (div.dataset.wheelToPage) return;
  div.dataset.wheelToPage = "true";
  div.addEventListener("wheel", (event) => event.stopPropagation(), { capture: true });
}

/** "train_loss" → "train loss"; "test_acc" → "test accuracy". */
export function metricLabel(metric) {
  const [split, kind] = metric.split("_");
  return `${split} ${kind === "acc" ? "accuracy" : kind}`;
}

/** A number short: 0.0123, 12.35, 1.1e9. */
export function short(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(1).replace("e+", "e") : String(Number(v.toPrecision(4)));
}

function mapValues(values, fn) {
  return values.map((v) => (Array.isArray(v) ? mapValues(v, fn) : v === null ? null : fn(v)));
}

/** log10 of positive values (others become gaps) when `log`, else the values. */
export function toDisplay(values, log) {
  if (!log) return values;
  return mapValues(values, (v) => (v > 0 ? Math.log10(v) : null));
}

/** [min, max] of the finite numbers in a (nested) array, or null when there are none. */
export function extent(values) {
  let min = Infinity;
  let max = -Infinity;
  const walk = (arr) => {
    for (const v of arr) {
      if (Array.isArray(v)) walk(v);
      else if (v !== null && Number.isFinite(v)) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
    }
  };
  walk(values || []);
  return min <= max ? [min, max] : null;
}

/** A user range in data units → display units (null ends mean "automatic"). */
export function rangeToDisplay([low, high], log) {
  if (!log) return [low, high];
  const lg = (v) => (v !== null && v > 0 ? Math.log10(v) : null);
  return [lg(low), lg(high)];
}

const isLoss = (metric) => /_loss$/.test(metric);

/**
 * How to draw `metric` of one or more surfaces (compared surfaces share it):
 *   log      the scale: `log` when given, else log for losses spanning ≥ 2 decades;
 *   range    [low, high] in display units (ends filled from the data);
 *   capped   true when linear losses above LOSS_CAP are drawn at the cap;
 *   max      the largest true value (data units), for the label saying what the cap hides.
 * `range` (data units, null ends = automatic) is the user's choice.
 */
export function scaleFor(surfaces, metric, { log = null, range = [null, null] } = {}) {
  const arrays = surfaces.map((s) => s?.values?.[metric]).filter(Boolean);
  const raw = extent(arrays);
  const positive = raw && raw[0] > 0;
  const useLog = log ?? Boolean(isLoss(metric) && positive && Math.log10(raw[1] / raw[0]) >= LOG_DECADES);
  const shown = extent(arrays.map((a) => toDisplay(a, useLog)));
  const user = rangeToDisplay(range, useLog);
  let capped = false;
  let high = user[1] ?? shown?.[1] ?? null;
  let low = user[0] ?? shown?.[0] ?? null;
  if (!useLog && isLoss(metric) && user[1] === null && shown && shown[1] > LOSS_CAP) {
    capped = true;
    high = Math.max(LOSS_CAP, low ?? -Infinity);
    if (low !== null && low > high) low = high;
  }
  return { log: useLog, range: [low, high], capped, max: raw ? raw[1] : null, min: raw ? raw[0] : null };
}

/** Plotly colour scale: Viridis, with the clamped top (values drawn at the cap) in grey. */
export function colorscale(capped) {
  const stops = VIRIDIS.map((c, k) => [k / (VIRIDIS.length - 1), `rgb(${c.join(",")})`]);
  if (!capped) return stops;
  stops[stops.length - 1] = [0.998, stops[stops.length - 1][1]];
  stops.push([1, CAPPED_COLOR]);
  return stops;
}

/** The clamp in words, for the figure and the previews' legends. */
export function capNote(scale) {
  return scale.capped ? `grey: values above ${LOSS_CAP} drawn at ${LOSS_CAP} — max ${short(scale.max)}` : "";
}

/** Colour bar / axis title: "train loss (log scale)", "train loss (clamped at 10)". */
export function valueTitle(metric, scale) {
  const label = metricLabel(metric);
  if (scale.log) return `${label} (log scale)`;
  return scale.capped ? `${label} (clamped at ${LOSS_CAP})` : label;
}

/** Which Hessian eigenvectors x and y are, per ``hessian_ends`` (landscape/directions.py). */
export const EIGENVECTOR_NAMES = {
  max: ["top eigenvector", "second eigenvector"],
  min: ["bottom eigenvector", "second from the bottom"],
  "max,min": ["top eigenvector", "bottom eigenvector"],
};

/** Axis titles: the directions' names; "PC1 (83.2 %)" on PCA surfaces (Li et al. 2018, §7);
 * on Hessian directions the eigenvector and its eigenvalue, "top eigenvector (λ = 76.3)". */
export function axisTitles(surface) {
  const dirs = surface.provenance?.directions;
  if (dirs?.kind === "hessian" && dirs.eigenvalues?.length) {
    const names = EIGENVECTOR_NAMES[dirs.hessian_ends] || EIGENVECTOR_NAMES.max;
    return names.map((name, k) => (Number.isFinite(dirs.eigenvalues[k]) ? `${name} (λ = ${short(dirs.eigenvalues[k])})` : name));
  }
  const ratios = surface.trajectory?.explained_variance;
  if (!ratios?.length) return ["direction δ", "direction η"];
  const title = (k) => (Number.isFinite(ratios[k]) ? `PC${k + 1} (${(100 * ratios[k]).toFixed(1)} %)` : `PC${k + 1}`);
  return [title(0), title(1)];
}

function fmtHover(v) {
  if (v === null || v === undefined) return "not computed yet";
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toPrecision(5);
}

function clamp(values, [low, high]) {
  return mapValues(values, (v) => Math.min(high ?? Infinity, Math.max(low ?? -Infinity, v)));
}

/**
 * Plotly {data, layout} for one surface.
 * options: metric, view ("surface" | "contour" | "heatmap"; 1D always a curve), scale (from
 * scaleFor; computed from this surface and `log`/`range` when absent), compact (a narrow
 * panel: smaller margins, camera further back), narrow (a phone: the colour bar goes below
 * the plot so the 3D scene gets the whole width), title (text above the plot), theme.
 */
export function figure(surface, { metric, view = "surface", scale = null, log = null, range = [null, null], compact = false, narrow = false, title = "", theme = LIGHT } = {}) {
  const t = { ...LIGHT, ...theme };
  scale = scale || scaleFor([surface], metric, { log, range });
  const raw = surface.values?.[metric] || [];
  const label = metricLabel(metric);
  const note = capNote(scale);
  const annotations = [];
  if (note) {
    annotations.push({ text: note, showarrow: false, xref: "paper", yref: "paper", x: 0, y: 1, xanchor: "left", yanchor: "bottom", font: { size: 11, color: t.muted } });
  }
  const top = (title ? 30 : 0) + (note ? 22 : 0);
  const base = {
    uirevision: `${surface.id}:${view}`,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: t.font, color: t.text, size: 12 },
    hoverlabel: { font: { family: t.font } },
    annotations,
  };
  if (title) base.title = { text: title, x: 0.01, xanchor: "left", y: 0.99, yanchor: "top", font: { size: 15 } };
  const axis = { gridcolor: t.grid, zerolinecolor: t.grid, linecolor: t.grid, color: t.muted };
  const range2 = scale.range;
  const [xTitle, yTitle] = axisTitles(surface);

  if (surface.ndim === 1 || !surface.y) {
    const yaxis = { ...axis, title: { text: valueTitle(metric, scale) }, type: scale.log ? "log" : "linear" };
    if (range2[0] !== null && range2[1] !== null) yaxis.range = range2;
    return {
      data: [
        {
          type: "scatter",
          mode: "lines+markers",
          x: surface.x,
          y: scale.log ? raw : clamp(raw, range2),
          text: mapValues(raw, fmtHover),
          connectgaps: false,
          line: { color: t.accent, width: 2 },
          marker: { size: 4 },
          name: label,
          hovertemplate: `δ %{x:.4f}<br>${label} %{text}<extra></extra>`,
        },
      ],
      layout: {
        ...base,
        margin: { l: compact ? 48 : 64, r: 16, t: 16 + top, b: 48 },
        xaxis: { ...axis, title: { text: xTitle } },
        yaxis,
        showlegend: false,
      },
    };
  }

  // WebGL surfaces (and contours) fail on grids with under two rows or columns of values, as
  // a partial surface has early on: draw the rows and columns that have values.
  const trimmed = view === "heatmap" ? { x: surface.x, y: surface.y, values: raw } : trimGaps(surface.x, surface.y, raw);
  if (!trimmed) return waiting(base, t, "Waiting for the first points…");
  const z = clamp(toDisplay(trimmed.values, scale.log), range2); // hover keeps the true values
  const text = mapValues(trimmed.values, fmtHover).map((row) => row.map((v) => (v === null ? "not computed yet" : v)));
  const colors = {
    colorscale: colorscale(scale.capped),
    colorbar: narrow
      ? { title: { text: valueTitle(metric, scale), side: "top" }, orientation: "h", x: 0.5, xanchor: "center", y: view === "surface" ? 0 : -0.24, yanchor: "top", len: 0.9, thickness: 10, outlinewidth: 0 }
      : { title: { text: valueTitle(metric, scale), side: "right" }, thickness: compact ? 10 : 12, outlinewidth: 0, len: compact ? 0.8 : 1 },
  };
  // Log scales are labelled in the metric's own units at whole decades (0.01, 0.1, 1, 10).
  const decades = scale.log ? decadeTicks(range2) : null;
  if (decades) Object.assign(colors.colorbar, decades);
  const hovertemplate = `δ %{x:.4f}<br>η %{y:.4f}<br>${label} %{text}<extra></extra>`;
  const path = surface.trajectory && surface.trajectory.y ? surface.trajectory : null;

  if (view === "surface") {
    const trace = {
      type: "surface",
      x: trimmed.x,
      y: trimmed.y,
      z,
      text,
      hovertemplate,
      ...colors,
      // Projected contours are slow (seconds per frame in software WebGL) when z has gaps:
      // draw them once the surface is complete.
      contours: { z: { show: !hasGaps(trimmed.values), usecolormap: true, project: { z: true }, width: 1 } },
      lighting: { ambient: 0.75, diffuse: 0.6, specular: 0.15, roughness: 0.6 },
    };
    if (range2[0] !== null) trace.cmin = range2[0];
    if (range2[1] !== null) trace.cmax = range2[1];
    const zaxis = { ...axis, title: { text: "" }, ...(decades || {}) }; // the colour bar has the title
    if (range2[0] !== null && range2[1] !== null && range2[0] < range2[1]) zaxis.range = range2;
    const data = [trace];
    if (path) data.push(trajectoryTrace(path, { x: trimmed.x, y: trimmed.y, z }));
    return {
      data,
      layout: {
        ...base,
        margin: { l: 0, r: 0, t: 28 + top, b: narrow ? 64 : 0 }, // t: room for the mode bar
        scene: {
          xaxis: { ...axis, title: { text: xTitle } },
          yaxis: { ...axis, title: { text: yTitle } },
          zaxis,
          aspectmode: "manual",
          aspectratio: compact ? { x: 1, y: 1, z: 0.6 } : { x: 1, y: 1, z: 0.7 },
          camera: { eye: narrow ? { x: 1.9, y: 1.9, z: 1.2 } : compact ? { x: 1.7, y: 1.7, z: 1.0 } : { x: 1.35, y: 1.35, z: 0.95 } },
        },
      },
    };
  }

  const trace = {
    type: view === "heatmap" ? "heatmap" : "contour",
    x: trimmed.x,
    y: trimmed.y,
    z,
    text,
    hovertemplate,
    ...colors,
    zauto: false,
    zmin: range2[0],
    zmax: range2[1],
  };
  if (view === "contour") {
    trace.ncontours = 24;
    trace.contours = { coloring: "heatmap" }; // the clamped grey shows as it does in 3D
    trace.line = { width: 0.5, color: "rgba(255,255,255,0.35)" };
    trace.connectgaps = false;
  }
  const data = [trace];
  if (path) data.push(trajectoryTrace(path, null));
  if (surface.marks?.x?.length) data.push(marksTrace(surface.marks));
  if (surface.nets?.x?.length) data.push(netsTrace(surface.nets));
  return {
    data,
    layout: {
      ...base,
      margin: { l: compact ? 44 : 56, r: 8, t: 28 + top, b: narrow ? 96 : 44 },
      xaxis: { ...axis, title: { text: xTitle }, constrain: "domain" },
      yaxis: { ...axis, title: { text: yTitle }, scaleanchor: "x", constrain: "domain" },
      showlegend: false,
    },
  };
}

/** tickvals/ticktext at the whole decades inside [low, high] (log10 units), or null. */
function decadeTicks([low, high]) {
  if (low === null || high === null) return null;
  const first = Math.ceil(low);
  const last = Math.floor(high);
  const step = Math.max(1, Math.ceil((last - first + 1) / 6)); // at most about 6 labels
  const tickvals = [];
  for (let k = first; k <= last; k += step) tickvals.push(k);
  if (tickvals.length < 2) return null;
  return { tickvals, ticktext: tickvals.map((k) => short(10 ** k)) };
}

const PATH_COLOR = "#e4572e";

/** The nets a plane goes through ({names, x, y}; a three_point surface's three checkpoints),
 * as labelled markers. */
function netsTrace(nets) {
  return {
    type: "scatter",
    mode: "markers+text",
    name: "nets",
    x: nets.x,
    y: nets.y,
    text: nets.names,
    textposition: "top center",
    textfont: { color: "white", size: 13 }, // trained nets sit in the dark, low-loss basins
    showlegend: false,
    marker: { symbol: "x", size: 10, color: PATH_COLOR, line: { width: 1, color: "white" } },
    hovertemplate: "%{text}<br>(%{x:.3f}, %{y:.3f})<extra>net</extra>",
  };
}

/** Open circles at points `marks` names ({name, x, y}): an estimate's points not at target. */
function marksTrace(marks) {
  return {
    type: "scatter",
    mode: "markers",
    name: marks.name,
    x: marks.x,
    y: marks.y,
    showlegend: false,
    marker: { symbol: "circle-open", size: 12, color: PATH_COLOR, line: { width: 2, color: PATH_COLOR } },
    hovertemplate: `(%{x:.3f}, %{y:.3f})<extra>${marks.name}</extra>`,
  };
}

/**
 * The training path (one marker per snapshot, final weights at 0, 0) over a contour or
 * heatmap, or — given the drawn grid {x, y, z} — as a line on the 3D surface at the
 * interpolated height (gaps where it leaves the grid or the grid has no value yet).
 */
function trajectoryTrace(path, grid) {
  const text = path.epochs.map((e) => `epoch ${e}`);
  const common = { name: "trajectory", x: path.x, y: path.y, text, mode: "lines+markers", showlegend: false };
  if (!grid) {
    return {
      ...common,
      type: "scatter",
      line: { color: PATH_COLOR, width: 2 },
      marker: { color: PATH_COLOR, size: 7, line: { color: "white", width: 1 } },
      hovertemplate: "%{text}<br>(%{x:.3f}, %{y:.3f})<extra>trajectory</extra>",
    };
  }
  return {
    ...common,
    type: "scatter3d",
    z: path.x.map((px, k) => bilinear(grid, px, path.y[k])),
    connectgaps: false,
    line: { color: PATH_COLOR, width: 5 },
    marker: { color: PATH_COLOR, size: 3 },
    hovertemplate: "%{text}<extra>trajectory</extra>",
  };
}

/** z on the grid at (px, py), bilinear; null outside the grid or next to a missing value. */
function bilinear({ x, y, z }, px, py) {
  const cell = (axis, v) => {
    if (axis.length < 2 || v < axis[0] || v > axis[axis.length - 1]) return -1;
    let i = 0;
    while (i < axis.length - 2 && axis[i + 1] < v) i += 1;
    return i;
  };
  const i = cell(x, px);
  const j = cell(y, py);
  if (i < 0 || j < 0) return null;
  const corners = [z[j]?.[i], z[j]?.[i + 1], z[j + 1]?.[i], z[j + 1]?.[i + 1]];
  if (corners.some((v) => v === null || v === undefined)) return null;
  const tx = (px - x[i]) / (x[i + 1] - x[i]);
  const ty = (py - y[j]) / (y[j + 1] - y[j]);
  const [a, b, c, d] = corners;
  return a * (1 - tx) * (1 - ty) + b * tx * (1 - ty) + c * (1 - tx) * ty + d * tx * ty;
}

function hasGaps(rows) {
  return rows.some((row) => row.some((v) => v === null));
}

/** Drop rows and columns with no value; null when fewer than 2×2 remain. */
function trimGaps(x, y, rows) {
  const keepRows = rows.map((row) => row.some((v) => v !== null));
  const nx = rows[0]?.length || 0;
  const keepCols = Array.from({ length: nx }, (_, i) => rows.some((row) => row[i] !== null));
  const nRows = keepRows.filter(Boolean).length;
  const nCols = keepCols.filter(Boolean).length;
  if (nRows < 2 || nCols < 2) return null;
  if (nRows === rows.length && nCols === nx) return { x, y, values: rows };
  return {
    x: x.filter((_, i) => keepCols[i]),
    y: y.filter((_, j) => keepRows[j]),
    values: rows.filter((_, j) => keepRows[j]).map((row) => row.filter((_, i) => keepCols[i])),
  };
}

/** An empty figure with a centred message, for surfaces with no drawable points yet. */
function waiting(base, t, message) {
  return {
    data: [],
    layout: {
      ...base,
      margin: { l: 0, r: 0, t: 0, b: 0 },
      xaxis: { visible: false },
      yaxis: { visible: false },
      annotations: [{ text: message, showarrow: false, font: { size: 15, color: t.muted }, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
    },
  };
}
