// A 3D loss volume (values nz × ny × nx, docs/api.md): an isosurface of the whole volume and
// one z slice drawn as the 2D views draw a surface, with a slider through the slices. The
// compare view links several volumes so that one slider drives them all (linkSliders).

import { PLOT_CONFIG, toDisplay } from "/vendor/figure.js";
import { h } from "./dom.js";
import { draw, loadPlotly, purge, scaleFor } from "./plots.js";
import { fillGrid, previewSurface } from "./partial.js";

/** Slice `k` of a volume as a 2D surface the shared figure draws (filled while partial). */
export function sliceOf(volume, k) {
  const values = Object.fromEntries(Object.entries(volume.values || {}).map(([m, v]) => [m, v[k]]));
  const first = Object.values(values)[0] || [];
  const done = first.flat().filter((v) => v !== null).length;
  const total = volume.x.length * volume.y.length;
  const status = done === total ? "complete" : "partial";
  return previewSurface({ ...volume, ndim: 2, z: undefined, values, done, total, status, trajectory: null });
}

/** The isosurface trace: every point, gaps filled per slice (beyond the top where a slice is
 * empty, so they draw no surface), in display units (log10 for log scales). */
function isosurface(volume, metric, scale, narrow) {
  const slices = volume.values[metric].map((rows) => fillGrid(rows) || rows.map((r) => r.map(() => null)));
  const shown = toDisplay(slices, scale.log);
  const [low, high] = scale.range;
  const x = [], y = [], z = [], value = [];
  shown.forEach((rows, k) => rows.forEach((row, j) => row.forEach((v, i) => {
    x.push(volume.x[i]);
    y.push(volume.y[j]);
    z.push(volume.z[k]);
    value.push(v === null ? high : Math.min(v, high));
  })));
  const span = high - low || 1;
  return {
    type: "isosurface",
    x, y, z, value,
    isomin: low + 0.1 * span,
    isomax: low + 0.7 * span,
    surface: { count: 4 },
    caps: { x: { show: false }, y: { show: false }, z: { show: false } },
    opacity: 0.5,
    colorscale: "Viridis",
    cmin: low,
    cmax: high,
    colorbar: {
      title: { text: scale.log ? `log10 ${metric}` : metric, side: narrow ? "top" : "right" },
      // A phone's card is too narrow for a bar beside the scene: it goes below, as draw's do.
      ...(narrow ? { orientation: "h", x: 0.5, xanchor: "center", y: 0, yanchor: "top", len: 0.9, thickness: 10 } : { thickness: 12 }),
      outlinewidth: 0,
    },
  };
}

/**
 * A volume view: `element` (isosurface, slider, slice plot), `update(volume, options)` to
 * draw (options as `draw`'s: metric, view, scale), `setSlice(k)`, `onSlice(fn)`, `destroy()`.
 */
export function volumeView(label = "volume") {
  const iso = h("div", { class: "plot volume-iso", role: "figure", "aria-label": `Isosurfaces of the ${label}`, dataset: { role: "isosurface" } });
  const slider = h("input", { type: "range", min: "0", max: "0", step: "1", value: "0", class: "volume-slider", "aria-label": "z slice" });
  const where = h("span", { class: "hint volume-where", "aria-live": "polite" });
  const slicePlot = h("div", { class: "plot volume-slice", role: "figure", "aria-label": `One z slice of the ${label}`, dataset: { role: "slice" } });
  const sliceNote = h("p", { class: "hint plot-note volume-note", "aria-live": "polite" });
  const element = h("div", { class: "volume" }, iso, h("label", { class: "volume-control" }, "z slice ", slider, " ", where), slicePlot, sliceNote);
  let volume = null;
  let options = null;
  const listeners = [];

  const drawSlice = async () => {
    if (!volume) return;
    const k = Number(slider.value);
    where.textContent = `z = ${volume.z[k].toFixed(3)} (slice ${k + 1} of ${volume.z.length})`;
    const slice = sliceOf(volume, k);
    sliceNote.textContent = slice.preview ? `slice ${slice.preview.done} of ${slice.preview.total} points, interpolated` : "";
    await draw(slicePlot, slice, { ...options, view: options.view || "heatmap" });
    if (Number(slider.value) === k) slicePlot.dataset.slice = String(k); // drawn, not superseded
    slicePlot.dataset.ready = "true";
  };

  slider.addEventListener("input", () => {
    drawSlice();
    for (const fn of listeners) fn(Number(slider.value));
  });

  return {
    element,
    slider,
    async update(next, nextOptions) {
      const first = !volume;
      volume = next;
      options = nextOptions;
      slider.max = String(volume.z.length - 1);
      if (first) slider.value = String(volume.z.reduce((best, v, k) => (Math.abs(v) < Math.abs(volume.z[best]) ? k : best), 0));
      const scale = options.scale || scaleFor([volume], options.metric);
      const narrow = window.matchMedia("(max-width: 600px)").matches;
      const drawIso = async () => {
        const Plotly = await loadPlotly();
        await Plotly.react(iso, [isosurface(volume, options.metric, scale, narrow)], {
          margin: { l: 0, r: 0, t: 28, b: narrow ? 64 : 0 }, // t: room for the mode bar
          scene: { xaxis: { title: { text: "x" } }, yaxis: { title: { text: "y" } }, zaxis: { title: { text: "z" } } },
          paper_bgcolor: "rgba(0,0,0,0)",
        }, PLOT_CONFIG);
        iso.dataset.ready = "true";
      };
      // The slice is drawn with the isosurface, not after it: it shows even where WebGL fails.
      const failed = (await Promise.allSettled([drawIso(), drawSlice()])).find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
    },
    setSlice(k) {
      if (!volume) return;
      const clamped = Math.max(0, Math.min(volume.z.length - 1, k));
      if (Number(slider.value) === clamped) return;
      slider.value = String(clamped);
      drawSlice();
    },
    onSlice(fn) {
      listeners.push(fn);
    },
    destroy() {
      purge(iso);
      purge(slicePlot);
    },
  };
}

/** One slider drives every view: moving any moves the others to the same slice index. */
export function linkSliders(views) {
  for (const view of views) view.onSlice((k) => views.forEach((other) => other !== view && other.setSlice(k)));
}
