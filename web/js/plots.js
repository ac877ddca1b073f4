// Plotly figures for surfaces (loaded on first use), canvas previews and linked cameras.

import { metricLabel } from "./dom.js";

let plotlyPromise = null;

/** Load /vendor/plotly.min.js once (a classic script defining window.Plotly). */
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/vendor/plotly.min.js";
      script.async = true;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        plotlyPromise = null;
        reject(new Error("Could not load the plotting library (/vendor/plotly.min.js)."));
      };
      document.head.append(script);
    });
  }
  return plotlyPromise;
}

/** True when the browser can draw WebGL (Plotly's 3D surfaces need it). */
export function hasWebGL() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl") || canvas.getContext("experimental-webgl"));
  } catch {
    return false;
  }
}

const COLORSCALE = "Viridis";

export function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function theme() {
  return {
    text: cssVar("--text", "#1d2433"),
    muted: cssVar("--muted", "#5b6474"),
    grid: cssVar("--plot-grid", "#d8dde6"),
    font: cssVar("--font-sans", "system-ui, sans-serif"),
  };
}

/** Apply `fn` to every number of a flat or nested array, keeping nulls as gaps. */
function mapValues(values, fn) {
  return values.map((v) => (Array.isArray(v) ? mapValues(v, fn) : v === null ? null : fn(v)));
}

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

// Far from the minimum, filter-normalized losses of deep plain nets reach 1e8 and flatten
// everything else to a plane. Li et al. (2018) plot losses up to 10; so does this page unless
// the user sets a range or switches to log scale (values above are drawn at the cap).
export const LOSS_CAP = 10;

/** The default upper end for a metric in display units: LOSS_CAP for linear losses. */
function defaultCap(metric, log) {
  return !log && /_loss$/.test(metric) ? LOSS_CAP : null;
}

/** The display range (log10 units when `log`) of a surface's metric, capped as drawn. */
export function displayExtent(surface, metric, log) {
  const values = surface.values?.[metric];
  const ext = values ? extent(toDisplay(values, log)) : null;
  const cap = defaultCap(metric, log);
  return ext && cap !== null && ext[1] > cap ? [Math.min(ext[0], cap), cap] : ext;
}

/** `range` with the default cap filled in when the data exceed it; `capped` says so. */
function effectiveRange(values, metric, log, range) {
  const cap = defaultCap(metric, log);
  const ext = extent(values);
  if (range[1] === null && cap !== null && ext && ext[1] > cap) {
    return { range: [range[0], Math.max(cap, range[0] ?? -Infinity)], capped: true };
  }
  return { range, capped: false };
}

/** Values clamped into [low, high] (null ends: unbounded), as ParaView's zmax does. */
function clamp(values, [low, high]) {
  if (low === null && high === null) return values;
  return mapValues(values, (v) => Math.min(high ?? Infinity, Math.max(low ?? -Infinity, v)));
}

/** A user range in data units → display units (null ends mean "automatic"). */
export function rangeToDisplay([low, high], log) {
  if (!log) return [low, high];
  return [low !== null && low > 0 ? Math.log10(low) : null, high !== null && high > 0 ? Math.log10(high) : null];
}

function fmtHover(v) {
  if (v === null || v === undefined) return "not computed yet";
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toPrecision(5);
}

/**
 * Plotly data + layout for one surface.
 * options: metric ("train_loss"), view ("surface" | "contour" | "heatmap"; 1D always draws a
 * curve), log (bool), range ([min, max] in display units, either end null = automatic),
 * compact (a narrow panel: the camera stands further back so tick labels fit).
 */
export function figure(surface, { metric, view = "surface", log = false, range = [null, null], compact = false }) {
  const t = theme();
  const raw = surface.values?.[metric] || [];
  const label = metricLabel(metric);
  const base = {
    uirevision: `${surface.id}:${view}`,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: t.font, color: t.text, size: 12 },
    hoverlabel: { font: { family: t.font } },
  };
  const axis = { gridcolor: t.grid, zerolinecolor: t.grid, linecolor: t.grid, color: t.muted };
  const shown = effectiveRange(toDisplay(raw, log), metric, log, range);
  range = shown.range;
  const hasRange = range[0] !== null || range[1] !== null;
  const capNote = shown.capped ? ` (≤ ${LOSS_CAP}, Li et al.)` : "";

  if (surface.ndim === 1 || !surface.y) {
    const yaxis = { ...axis, title: { text: label + capNote }, type: log ? "log" : "linear" };
    if (hasRange) {
      const ext = extent(toDisplay(raw, log)) || [0, 1];
      yaxis.range = [range[0] ?? ext[0], range[1] ?? ext[1]];
    }
    return {
      data: [
        {
          type: "scatter",
          mode: "lines+markers",
          x: surface.x,
          y: raw,
          connectgaps: false,
          line: { color: cssVar("--accent", "#3563e9"), width: 2 },
          marker: { size: 4 },
          name: label,
          hovertemplate: `x %{x:.4f}<br>${label} %{y:.5g}<extra></extra>`,
        },
      ],
      layout: {
        ...base,
        margin: { l: 64, r: 16, t: 16, b: 48 },
        xaxis: { ...axis, title: { text: "x (direction δ)" } },
        yaxis,
        showlegend: false,
      },
    };
  }

  // WebGL surfaces (and contours) fail on grids with under two rows or columns of values, as
  // a partial surface has early on: draw the rows and columns that have values.
  const trimmed = view === "heatmap" ? { x: surface.x, y: surface.y, values: raw } : trimGaps(surface.x, surface.y, raw);
  if (!trimmed) return waiting(base, "Waiting for the first points…");
  const z = clamp(toDisplay(trimmed.values, log), range); // hover text keeps the true values
  const text = mapValues(trimmed.values, fmtHover).map((row) => row.map((v) => (v === null ? "not computed yet" : v)));
  const colorTitle = (log ? `log₁₀ ${label}` : label) + capNote;
  const colors = {
    colorscale: COLORSCALE,
    colorbar: { title: { text: colorTitle, side: "right" }, thickness: 12, outlinewidth: 0 },
  };
  const hovertemplate = `x %{x:.4f}<br>y %{y:.4f}<br>${label} %{text}<extra></extra>`;

  const [xTitle, yTitle] = axisTitles(surface);
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
    if (range[0] !== null) trace.cmin = range[0];
    if (range[1] !== null) trace.cmax = range[1];
    const zaxis = { ...axis, title: { text: "" } }; // the colour bar carries the title
    if (range[0] !== null && range[1] !== null) zaxis.range = range;
    const data = [trace];
    if (path) data.push(trajectoryTrace(path, { x: trimmed.x, y: trimmed.y, z }));
    return {
      data,
      layout: {
        ...base,
        margin: { l: 0, r: 0, t: 28, b: 0 }, // t: room for the mode bar above the colour bar
        scene: {
          xaxis: { ...axis, title: { text: xTitle } },
          yaxis: { ...axis, title: { text: yTitle } },
          zaxis,
          aspectmode: "manual",
          aspectratio: { x: 1, y: 1, z: 0.7 },
          camera: { eye: compact ? { x: 1.6, y: 1.6, z: 1.1 } : { x: 1.35, y: 1.35, z: 0.95 } },
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
  };
  if (view === "contour") {
    trace.ncontours = 24;
    trace.line = { width: 0.5, color: "rgba(255,255,255,0.35)" };
    trace.connectgaps = false;
  }
  if (hasRange) {
    trace.zauto = false;
    const auto = extent(z) || [0, 1];
    trace.zmin = range[0] ?? auto[0];
    trace.zmax = range[1] ?? auto[1];
  }
  const data = [trace];
  if (path) data.push(trajectoryTrace(path, null));
  return {
    data,
    layout: {
      ...base,
      margin: { l: 56, r: 8, t: 28, b: 48 },
      xaxis: { ...axis, title: { text: xTitle }, constrain: "domain" },
      yaxis: { ...axis, title: { text: yTitle }, scaleanchor: "x", constrain: "domain" },
      showlegend: false,
    },
  };
}

/** "PC1 (83.2 %)" on PCA surfaces: the share of the trajectory's variance each axis holds
 * says how faithful the drawn path is (Li et al. 2018, §7); else the direction names. */
export function axisTitles(surface) {
  const ratios = surface.trajectory?.explained_variance;
  if (!ratios?.length) return ["x (δ)", "y (η)"];
  const title = (k) => (Number.isFinite(ratios[k]) ? `PC${k + 1} (${(100 * ratios[k]).toFixed(1)} %)` : `PC${k + 1}`);
  return [title(0), title(1)];
}

const PATH_COLOR = "#e4572e";

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
function waiting(base, message) {
  return {
    data: [],
    layout: {
      ...base,
      margin: { l: 0, r: 0, t: 0, b: 0 },
      xaxis: { visible: false },
      yaxis: { visible: false },
      annotations: [{ text: message, showarrow: false, font: { size: 15, color: theme().muted }, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
    },
  };
}

const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"],
};

const drawing = new WeakMap(); // div → {busy, next}: at most one Plotly.react in flight per div

/**
 * Draw (or update in place, keeping the camera) a surface figure into `div`. Calls made while
 * a draw is running collapse into one draw of the latest arguments.
 */
export async function draw(div, surface, options) {
  const Plotly = await loadPlotly();
  let slot = drawing.get(div);
  if (!slot) {
    slot = { busy: false, next: null, waiters: [] };
    drawing.set(div, slot);
  }
  if (slot.busy) {
    slot.next = [surface, options];
    return new Promise((resolve, reject) => slot.waiters.push({ resolve, reject }));
  }
  slot.busy = true;
  let waiters = [];
  try {
    let args = [surface, options];
    while (args) {
      const { data, layout } = figure(...args);
      await Plotly.react(div, data, layout, PLOT_CONFIG);
      for (const w of waiters) w.resolve(div);
      args = slot.next;
      slot.next = null;
      waiters = slot.waiters.splice(0);
    }
  } catch (err) {
    for (const w of [...waiters, ...slot.waiters.splice(0)]) w.reject(err);
    throw err;
  } finally {
    slot.busy = false;
    slot.next = null;
  }
  return div;
}

/** Save a plot as PNG through Plotly. */
export async function downloadPng(div, filename) {
  const Plotly = await loadPlotly();
  await Plotly.downloadImage(div, { format: "png", filename, width: 1200, height: 900 });
}

/** Free a plot's WebGL context and listeners. */
export function purge(div) {
  if (window.Plotly && div) window.Plotly.purge(div);
}

const LINKED_KEYS = /^(scene\.camera|xaxis\.|yaxis\.)/;

/**
 * Keep the cameras (3D) and axis ranges (2D) of several plots in step: a user's rotate or
 * zoom on one is applied to the others. Returns unlink().
 */
export function linkViews(divs) {
  let syncing = false;
  let frame = 0;
  let pending = null;
  const handlers = [];

  const apply = (source, update) => {
    if (syncing) return;
    const forwarded = {};
    for (const [key, value] of Object.entries(update || {})) {
      if (LINKED_KEYS.test(key)) forwarded[key] = value;
    }
    if (!Object.keys(forwarded).length) return;
    syncing = true;
    const targets = divs.filter((d) => d !== source && d.data);
    Promise.all(targets.map((d) => window.Plotly.relayout(d, forwarded)))
      .catch(() => {})
      .finally(() => {
        syncing = false;
      });
  };

  for (const div of divs) {
    // While dragging: at most one update per animation frame; at the end: the final view.
    const during = (update) => {
      pending = [div, update];
      if (!frame) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          if (pending) apply(...pending);
          pending = null;
        });
      }
    };
    const after = (update) => apply(div, update);
    div.on?.("plotly_relayouting", during);
    div.on?.("plotly_relayout", after);
    handlers.push([div, during, after]);
  }
  return () => {
    cancelAnimationFrame(frame);
    for (const [div, during, after] of handlers) {
      div.removeListener?.("plotly_relayouting", during);
      div.removeListener?.("plotly_relayout", after);
    }
  };
}
