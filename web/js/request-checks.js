// The request form's checks, in the form's own words: what the server would refuse (schema
// and GET /api/config limits), all at once, and the server's 422s mapped back to the fields.

import { VOLUME_FIELD_WORDS } from "./volume-form.js";

// The fields' own names (the labels on the form), by request path.
const FIELD_WORDS = {
  model: "Model",
  checkpoint: "Checkpoint",
  dataset: "Data set",
  "train.epochs": "Training epochs",
  "directions.seed": "Seed",
  "grid.nx": "Points along x",
  "grid.ny": "Points along y",
  "grid.xrange": "x range",
  "grid.yrange": "y range",
  "grid.xrange.0": "x from",
  "grid.xrange.1": "x to",
  "grid.yrange.0": "y from",
  "grid.yrange.1": "y to",
  grid: "Grid",
  splits: "Evaluate on",
  loss: "Loss",
  label: "Label",
  ...VOLUME_FIELD_WORDS,
};
// A problem of a pair is shown next to both of its inputs.
export const FIELD_GROUPS = {
  "grid.xrange": ["grid.xrange.0", "grid.xrange.1"],
  "grid.yrange": ["grid.yrange.0", "grid.yrange.1"],
  "grid.zrange": ["grid.zrange.0", "grid.zrange.1"],
  grid: ["grid.nx", "grid.ny", "grid.nz"],
  splits: ["splits"],
};

export function fieldName(field) {
  return FIELD_WORDS[field] || field || "Request";
}

/** The checks the server makes (schema and GET /api/config limits), all at once, in words. */
export function checkForm(f, limits) {
  const problems = [];
  const add = (field, message) => problems.push({ field, message });
  const value = (input) => (input.value.trim() === "" ? NaN : Number(input.value));
  const whole = (input, field, min, max) => {
    const v = value(input);
    if (!Number.isFinite(v)) return add(field, "enter a number"), null;
    if (!Number.isInteger(v)) return add(field, "must be a whole number"), null;
    if (min !== undefined && v < min) return add(field, `must be at least ${min}`), null;
    if (max !== undefined && max !== null && v > max) return add(field, `must be at most ${max}`), null;
    return v;
  };
  if (f.useCheckpoint && !f.checkpointSelect.value) add("checkpoint", "choose a stored checkpoint or upload one");
  if (!f.useCheckpoint) whole(f.epochs, "train.epochs", limits.min_epochs ?? 1, limits.max_epochs);
  if (f.directionKind.value !== "pca") whole(f.seed, "directions.seed", 0);
  const range = (lo, hi, field) => {
    const [a, b] = [value(lo), value(hi)];
    if (!Number.isFinite(a)) add(`${field}.0`, "enter a number");
    if (!Number.isFinite(b)) add(`${field}.1`, "enter a number");
    if (Number.isFinite(a) && Number.isFinite(b) && !(a < b)) add(field, `“from” (${a}) must be less than “to” (${b})`);
  };
  const minAxis = limits.min_grid_points_per_axis ?? 2;
  const oneD = f.dim.value === "1";
  const nx = whole(f.nx, "grid.nx", minAxis);
  const ny = oneD ? 1 : whole(f.ny, "grid.ny", minAxis);
  const nz = f.dim.value === "3" ? f.zFields.check(whole, range, minAxis) : 1;
  const shape = f.dim.value === "3" ? [nx, ny, nz] : [nx, ny];
  const points = nx * ny * nz;
  if (points && limits.max_grid_points && points > limits.max_grid_points) {
    add("grid", `${shape.join("×")} = ${points} points is more than this server's limit of ${limits.max_grid_points}`);
  }
  range(f.xmin, f.xmax, "grid.xrange");
  if (!oneD) range(f.ymin, f.ymax, "grid.yrange");
  if (!f.splits.some((b) => b.checked)) add("splits", "pick train, test or both");
  return problems;
}

/** A 422 from the server as [{field, message}] in the form's words (loc → field). */
export function inWords(err) {
  const fields = (err.fields || []).map(({ field, message }) => ({ field: field || "", message: plainMessage(message) }));
  if (!fields.length && err.status === 422 && /grid|points/i.test(err.message)) return [{ field: "grid", message: err.message }];
  return fields.filter((f) => f.field);
}

function plainMessage(message) {
  return String(message)
    .replace(/^Input should be greater than or equal to (.*)$/, "must be at least $1")
    .replace(/^Input should be greater than (.*)$/, "must be more than $1")
    .replace(/^Input should be less than or equal to (.*)$/, "must be at most $1")
    .replace(/^Input should be less than (.*)$/, "must be less than $1")
    .replace(/^Input should be a valid integer.*$/, "must be a whole number")
    .replace(/^Input should be a valid number.*$/, "enter a number")
    .replace(/^Field required$/, "is required");
}
