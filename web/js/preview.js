// Gallery previews: a small heatmap or curve drawn on a canvas, without Plotly or WebGL.

import { cssVar, extent, toDisplay } from "./plots.js";

// Viridis at 9 stops (matplotlib), for canvas previews drawn without Plotly.
const VIRIDIS = [
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

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
}

/**
 * A small static preview on a canvas: heatmap (2D, log-scaled loss) or a curve (1D).
 * Cheap: no Plotly, no WebGL; gaps (not computed) stay transparent.
 */
export function drawPreview(canvas, surface, metric) {
  const ctx = canvas.getContext("2d");
  const values = surface.values?.[metric];
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (!values) return;
  const log = metric.endsWith("loss");
  if (surface.ndim === 1 || !surface.y) {
    const shown = toDisplay(values, log);
    const ext = extent(shown);
    if (!ext) return;
    const span = ext[1] - ext[0] || 1;
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
      const py = height - 6 - ((v - ext[0]) / span) * (height - 12);
      if (drawing) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      drawing = true;
    });
    ctx.stroke();
    return;
  }
  const shown = toDisplay(values, log);
  const ext = extent(shown);
  if (!ext) return;
  const ny = shown.length;
  const nx = shown[0]?.length || 0;
  const image = ctx.createImageData(nx, ny);
  const span = ext[1] - ext[0] || 1;
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const v = shown[j][i];
      const o = 4 * ((ny - 1 - j) * nx + i); // row 0 is y min: draw it at the bottom
      if (v === null) continue;
      const [r, g, b] = viridis((v - ext[0]) / span);
      image.data.set([r, g, b, 255], o);
    }
  }
  const small = document.createElement("canvas");
  small.width = nx;
  small.height = ny;
  small.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(small, 0, 0, width, height);
}
