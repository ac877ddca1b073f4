// Gallery previews: a small heatmap or curve on a canvas (no Plotly, no WebGL), drawn on the
// same scale rules as the main view (scaleFor: log for losses spanning decades, linear losses
// clamped at 10 and the clamp in grey), at the grid's true aspect ratio, with a legend.

import { CAPPED_COLOR, VIRIDIS, capNote, scaleFor, short, toDisplay, valueTitle } from "/vendor/figure.js";
import { cssVar } from "./plots.js";
import { h } from "./dom.js";

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
}

const GREY = CAPPED_COLOR.match(/[0-9a-f]{2}/gi).map((c) => parseInt(c, 16));

/**
 * Draw `metric` of `surface` on `canvas`; returns the legend element (what the colours mean)
 * or null when there is nothing to draw. Gaps (not computed) stay transparent.
 */
export function drawPreview(canvas, surface, metric) {
  const ctx = canvas.getContext("2d");
  const values = surface.values?.[metric];
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (!values) return null;
  const scale = scaleFor([surface], metric);
  const [low, high] = scale.range;
  if (low === null) return null;
  const span = high - low || 1;
  const shown = toDisplay(values, scale.log);
  if (surface.ndim === 1 || !surface.y) {
    ctx.strokeStyle = cssVar("--accent", "#3563e9");
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    shown.forEach((v, i) => {
      if (v === null) {
        drawing = false;
        return;
      }
      const px = 6 + (i / Math.max(1, shown.length - 1)) * (width - 12);
      const py = height - 6 - ((Math.min(v, high) - low) / span) * (height - 12);
      if (drawing) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      drawing = true;
    });
    ctx.stroke();
    return legend(metric, scale, false);
  }
  const ny = shown.length;
  const nx = shown[0]?.length || 0;
  const image = ctx.createImageData(nx, ny);
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const v = shown[j][i];
      if (v === null) continue;
      const o = 4 * ((ny - 1 - j) * nx + i); // row 0 is y min: draw it at the bottom
      const rgb = scale.capped && v >= high ? GREY : viridis((v - low) / span);
      image.data.set([...rgb, 255], o);
    }
  }
  const small = document.createElement("canvas");
  small.width = nx;
  small.height = ny;
  small.getContext("2d").putImageData(image, 0, 0);
  // The grid's true aspect (x span : y span), centred, not stretched to the card.
  const xs = surface.x;
  const ys = surface.y;
  const aspect = Math.abs(xs[xs.length - 1] - xs[0]) / (Math.abs(ys[ys.length - 1] - ys[0]) || 1) || 1;
  const w = Math.min(width, height * aspect);
  const hgt = w / aspect;
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(small, (width - w) / 2, (height - hgt) / 2, w, hgt);
  canvas.dataset.aspect = (w / hgt).toFixed(3);
  return legend(metric, scale, true);
}

function legend(metric, scale, colours) {
  const stops = VIRIDIS.map((c) => `rgb(${c.join(",")})`).join(",");
  const unit = (v) => short(scale.log ? 10 ** v : v);
  return h(
    "div",
    { class: "preview-legend", dataset: { log: String(scale.log), capped: String(scale.capped) } },
    h("span", { class: "legend-title" }, valueTitle(metric, scale)),
    colours
      ? h("span", { class: "legend-bar" },
          h("span", {}, unit(scale.range[0])),
          h("span", { class: "legend-ramp", style: `background: linear-gradient(to right, ${stops})` }),
          h("span", {}, unit(scale.range[1])))
      : null,
    scale.capped ? h("span", { class: "legend-cap" }, h("span", { class: "legend-swatch", style: `background:${CAPPED_COLOR}` }), capNote(scale)) : null,
  );
}
