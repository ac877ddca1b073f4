// Plotly figures for surfaces (loaded on first use), canvas previews and linked cameras.

import { PLOT_CONFIG, figure, leaveWheelToPage, metricLabel } from "/vendor/figure.js";
import { previewFigure } from "./partial.js";

export { scaleFor } from "/vendor/figure.js";

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

export function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** The page's colours (CSS custom properties, light or dark) for the shared figure. */
function theme() {
  return {
    text: cssVar("--text", "#1d2433"),
    muted: cssVar("--muted", "#5b6474"),
    grid: cssVar("--plot-grid", "#d8dde6"),
    font: cssVar("--font-sans", "system-ui, sans-serif"),
    accent: cssVar("--accent", "#3563e9"),
  };
}

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
      const [next, nextOptions] = args;
      // Phones: compact margins, the colour bar below and the camera further back.
      const narrow = window.matchMedia("(max-width: 600px)").matches;
      const compact = nextOptions.compact || narrow;
      // A partial surface (previewSurface): its lattice's surface and the other points as dots.
      const { data, layout } = (next.preview ? previewFigure : figure)(next, { ...nextOptions, compact, narrow, theme: theme() });
      leaveWheelToPage(div);
      await Plotly.react(div, data, layout, imageConfig(Plotly, next, nextOptions));
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

/** The title a saved image carries: which surface, of which model on which data. */
export function pngTitle(surface, metric) {
  const name = surface.label || surface.model || "surface";
  const what = [surface.model && !name.includes(surface.model) ? surface.model : null, surface.dataset && `on ${surface.dataset}`]
    .filter(Boolean)
    .join(" ");
  return [name, what, metric].filter(Boolean).join(" · ");
}

/** A file name for a saved image: the surface's label (or model) and the start of its id. */
export function pngName(surface) {
  const slug = String(surface.label || surface.model || "surface").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  return `${slug || "surface"}-${String(surface.id || "").slice(0, 8)}`.replace(/-$/, "");
}

/**
 * The figure's mode bar with its camera button saving the image titled (Plotly's own saves
 * the bare plot, named "newplot"), as the page's PNG button does.
 */
function imageConfig(Plotly, surface, options) {
  const title = pngTitle(surface, options?.metric ? metricLabel(options.metric) : null);
  return {
    ...PLOT_CONFIG,
    modeBarButtonsToRemove: [...PLOT_CONFIG.modeBarButtonsToRemove, "toImage"],
    modeBarButtonsToAdd: [
      {
        name: "Download plot as a PNG (titled)",
        icon: Plotly.Icons.camera,
        click: (gd) => downloadPng(gd, pngName(surface), { title }),
      },
    ],
  };
}

/** Save a plot as PNG through Plotly, with `title` drawn above it. */
export async function downloadPng(div, filename, { title } = {}) {
  const Plotly = await loadPlotly();
  const layout = { ...div.layout };
  if (title) {
    layout.title = { text: title, x: 0.5, xanchor: "center", font: { size: 18 } };
    layout.margin = { ...(div.layout.margin || {}), t: Math.max(div.layout.margin?.t ?? 0, 64) };
  }
  const url = await Plotly.toImage({ data: div.data, layout }, { format: "png", width: 1200, height: 900 });
  const link = document.createElement("a");
  link.href = url;
  link.download = `${filename}.png`;
  document.body.append(link);
  link.click();
  link.remove();
}

/** Free a plot's WebGL context and listeners. */
export function purge(div) {
  if (window.Plotly && div) window.Plotly.purge(div);
}

/** The view a plot shows now: its 3D camera, or its 2D axis ranges. */
function viewOf(div) {
  const full = div._fullLayout || {};
  if (full.scene) {
    const live = full.scene._scene?.getCamera?.();
    return { "scene.camera": JSON.parse(JSON.stringify(live || div.layout?.scene?.camera || {})) };
  }
  const view = {};
  for (const name of ["xaxis", "yaxis"]) {
    if (full[name]?.range) view[`${name}.range`] = [...full[name].range];
  }
  return view;
}

function near(a, b) {
  if (typeof a === "number" && typeof b === "number") return Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));
  if (a && b && typeof a === "object" && typeof b === "object") {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) if (!near(a[k], b[k])) return false;
    return true;
  }
  return a === b;
}

/**
 * Keep the cameras (3D) and axis ranges (2D) of several plots in step, both ways: rotate,
 * zoom or pan on any one and the others follow. A plot is only moved when it shows another
 * view than the source, so the echo of a forwarded move stops there (no loop, no snap-back).
 * Returns unlink().
 */
export function linkViews(divs) {
  let frame = 0;
  let pendingSource = null;
  const handlers = [];

  const follow = (source) => {
    const view = viewOf(source);
    if (!Object.keys(view).length) return;
    for (const target of divs) {
      if (target === source || !target.data) continue;
      const theirs = viewOf(target);
      const changed = Object.fromEntries(Object.entries(view).filter(([k, v]) => !near(theirs[k], v)));
      if (Object.keys(changed).length) window.Plotly.relayout(target, changed).catch(() => {});
    }
  };

  for (const div of divs) {
    // While dragging: at most one update per animation frame; at the end: the final view.
    const during = () => {
      pendingSource = div;
      if (!frame) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          if (pendingSource) follow(pendingSource);
          pendingSource = null;
        });
      }
    };
    const after = (update) => {
      if (Object.keys(update || {}).some((k) => /^(scene\.camera|scene$|xaxis|yaxis)/.test(k))) follow(div);
    };
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
