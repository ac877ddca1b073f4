// Partial surfaces drawn without inventing structure.
//
// Points are computed coarse to fine (docs/format.md, "Point order"): each axis by bisection,
// so the corners, the edges' midpoints and the centre (a 3×3 lattice) come first, then a 5×5
// lattice (25 points, 6 % of 21×21), then 9×9, and so on. A preview surface is the bilinear
// interpolation through the largest lattice of computed rows × columns: every cell has its
// four corners computed, and inside it the surface stays between them, so it shows no wall,
// trench or terrace the values do not have. (Filling each row through whatever points it
// had, as before, stretched a row holding one point into a flat terrace across the plot.)
// Computed points off that lattice are drawn as dots at their true values; until a lattice
// is complete the points alone are drawn.

import { figure, scaleFor, toDisplay } from "/vendor/figure.js";

/** Level of each index of an axis of `n` points, as landscape.storage.order.axis_levels:
 * 0 for the ends and the middle, ℓ + 1 for the midpoints of the gaps left by levels ≤ ℓ. */
export function axisLevels(n) {
  const levels = new Array(n).fill(-1);
  let known = [...new Set([0, Math.floor((n - 1) / 2), n - 1])].filter((i) => i >= 0).sort((a, b) => a - b);
  for (const i of known) levels[i] = 0;
  for (let level = 1; levels.includes(-1); level++) {
    const added = [];
    for (let k = 0; k + 1 < known.length; k++) {
      if (known[k + 1] - known[k] > 1) added.push(Math.floor((known[k] + known[k + 1]) / 2));
    }
    for (const i of added) levels[i] = level;
    known = [...known, ...added].sort((a, b) => a - b);
  }
  return levels;
}

const isKnown = (v) => v !== null && v !== undefined && Number.isFinite(v);

/**
 * The finest complete lattice of a (ny × nx) grid with gaps: `{cols, rows}`, the sorted
 * indices of levels ≤ ℓ on each axis (both ends included), for the largest ℓ whose every
 * point is computed; null when not even level 0 (ends and middles) is. The point order
 * completes the levels one after the other, so this is the lattice it has just finished.
 */
export function completeLattice(grid) {
  const ny = grid.length;
  const nx = grid[0]?.length || 0;
  if (nx < 2 || ny < 2) return null;
  const [lx, ly] = [axisLevels(nx), axisLevels(ny)];
  const full = (js, is) => js.every((j) => is.every((i) => isKnown(grid[j][i])));
  const upTo = (levels, level) => levels.flatMap((l, i) => (l <= level ? [i] : []));
  let lattice = null; // the levels are nested: the first incomplete one ends the search
  for (let level = 0; level <= Math.max(...lx, ...ly); level++) {
    const [cols, rows] = [upTo(lx, level), upTo(ly, level)];
    if (!full(rows, cols)) break;
    lattice = { cols, rows };
  }
  return lattice;
}

/** For each index of an axis: the lattice nodes [a, b] around it and its place t between. */
function brackets(n, nodes) {
  const out = [];
  let k = 0;
  for (let i = 0; i < n; i++) {
    while (k + 2 < nodes.length && nodes[k + 1] < i) k++;
    const [a, b] = [nodes[k], nodes[k + 1]];
    out.push([a, b, (i - a) / (b - a)]);
  }
  return out;
}

/** The grid filled bilinearly from its lattice (exact at the lattice's nodes). */
export function latticeFill(grid, { cols, rows }) {
  const bx = brackets(grid[0].length, cols);
  const by = brackets(grid.length, rows);
  return by.map(([j0, j1, ty]) =>
    bx.map(([i0, i1, tx]) => {
      const top = grid[j0][i0] * (1 - tx) + grid[j0][i1] * tx;
      const bottom = grid[j1][i0] * (1 - tx) + grid[j1][i1] * tx;
      return top * (1 - ty) + bottom * ty;
    }),
  );
}

/** A grid with gaps → filled from its complete lattice, or null (no lattice yet). */
export function fillGrid(grid) {
  const lattice = completeLattice(grid);
  return lattice ? latticeFill(grid, lattice) : null;
}

/** The computed points of `grid` off `lattice` (all of them without one): {x, y, v}. */
function offLattice(surface, grid, lattice) {
  const onCols = new Set(lattice?.cols || []);
  const onRows = new Set(lattice?.rows || []);
  const dots = { x: [], y: [], v: [] };
  grid.forEach((row, j) =>
    row.forEach((v, i) => {
      if (!isKnown(v) || (onCols.has(i) && onRows.has(j))) return;
      dots.x.push(surface.x[i]);
      dots.y.push(surface.y[j]);
      dots.v.push(v);
    }),
  );
  return dots;
}

/**
 * A partial 2D surface ready to draw: each metric filled from its complete lattice (or left
 * as it is where there is none), with `preview = {done, total, raw, lattices, dots}`.
 * Anything else (complete, 1D, no points) is returned as it is.
 */
export function previewSurface(surface) {
  if (surface.status !== "partial" || surface.ndim !== 2 || !surface.done || surface.done >= surface.total) return surface;
  const values = {};
  const lattices = {};
  const dots = {};
  for (const [metric, grid] of Object.entries(surface.values || {})) {
    const lattice = completeLattice(grid);
    lattices[metric] = lattice;
    values[metric] = lattice ? latticeFill(grid, lattice) : grid;
    dots[metric] = offLattice(surface, grid, lattice);
  }
  const preview = { done: surface.done, total: surface.total, raw: surface.values, lattices, dots };
  return { ...surface, values, preview };
}

/** What a preview of `metric` shows, in words: always on screen next to the plot. */
export function previewLabel(preview, metric) {
  const lattice = preview.lattices[metric] || Object.values(preview.lattices)[0];
  const dots = (preview.dots[metric] || Object.values(preview.dots)[0])?.x.length || 0;
  const count = `${preview.done} of ${preview.total} points`;
  if (!lattice) return `Preview, ${count}: drawn as points until the corners, edges and centre are computed.`;
  const others = dots > 1 ? `; dots: the other ${dots} computed points` : dots ? "; the dot: one more computed point" : "";
  return `Interpolated preview, ${count}: bilinear through the ${lattice.cols.length}×${lattice.rows.length} lattice computed so far${others}.`;
}

const clampTo = ([low, high]) => (v) => (v === null ? null : Math.min(high ?? Infinity, Math.max(low ?? -Infinity, v)));

/** The computed points as markers coloured like the surface (`main` is its trace). */
function dotsTrace(dots, main, { view, scale, withBar }) {
  const shown = toDisplay(dots.v, scale.log).map(clampTo(scale.range));
  const marker = {
    color: shown,
    colorscale: main.colorscale,
    cmin: scale.range[0],
    cmax: scale.range[1],
    size: view === "surface" ? 4 : 8,
    line: { color: "rgba(255,255,255,0.9)", width: 1 },
    showscale: withBar,
    ...(withBar ? { colorbar: main.colorbar } : {}),
  };
  const trace = {
    name: "computed points",
    mode: "markers",
    x: dots.x,
    y: dots.y,
    text: dots.v.map((v) => Number(v.toPrecision(5))),
    marker,
    showlegend: false,
    hovertemplate: "δ %{x:.4f}<br>η %{y:.4f}<br>%{text}<extra>computed point</extra>",
  };
  return view === "surface" ? { ...trace, type: "scatter3d", z: shown } : { ...trace, type: "scatter" };
}

/**
 * The figure of a preview (as figure.js's `figure`, same options): the lattice's surface with
 * the other computed points as dots; without a lattice, the points alone on the axes and
 * colour bar the computed points would get.
 */
export function previewFigure(surface, options) {
  const { metric, view = "surface" } = options;
  const scale = options.scale || scaleFor([{ values: surface.preview.raw }], metric, options);
  const lattice = surface.preview.lattices[metric];
  const dots = surface.preview.dots[metric] || { x: [], y: [], v: [] };
  if (lattice) {
    const fig = figure(surface, { ...options, scale });
    if (dots.x.length && fig.data.length) fig.data.push(dotsTrace(dots, fig.data[0], { view, scale, withBar: false }));
    return fig;
  }
  const fig = figure({ ...surface, values: surface.preview.raw }, { ...options, scale });
  if (fig.data.length) fig.data[0] = dotsTrace(dots, fig.data[0], { view, scale, withBar: true });
  return fig;
}
