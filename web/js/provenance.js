// What a surface is: how its model was trained, how well, which directions, which grid and
// engine — and what each of its numbers means (docs/metrics.md, served at /help/metrics).
// Read from the surface's `provenance` (GET /api/surfaces/{id}); surfaces without it fall back
// to the job record that made them (its request and training progress). Absent rows are hidden.

import { links } from "./api.js";
import { fmt, fmtGrid, h, statLabel } from "./dom.js";

const HELP = "/help/metrics";

// One line per number; the anchor is the heading in docs/metrics.md.
const MEANINGS = {
  min: ["lowest value on the grid", "min"],
  max: ["highest value on the grid (plots clamp linear losses at 10)", "max"],
  center: ["value at the trained weights (grid centre)", "center"],
  sharpness: ["% rise of the loss within a small radius of the centre (Keskar et al.)", "sharpness"],
  "sharpness mean": ["the same with the mean instead of the max", "sharpness-mean"],
  "sharpness radius": ["radius used by the sharpness numbers, in direction units", "sharpness-radius"],
  roughness: ["wiggles beyond a smooth bowl: 3rd differences / value range", "roughness"],
  "total variation": ["mean step-to-step change / value range", "total-variation"],
  "convex fraction": ["share of grid points where the surface is locally convex", "convex-fraction"],
  nonconvexity: ["mean |negative curvature| / |curvature| in the plane: 0 convex, 1 saddle", "nonconvexity"],
};

/** A number's meaning and its formula's link: [meaning, href] or null. */
export function meaningOf(name) {
  const key = statLabel(name).replace(/^((train|test) )?(loss|accuracy) /, "");
  const entry = MEANINGS[key];
  return entry ? [entry[0], `${HELP}#${entry[1]}`] : null;
}

/** A <dl> row set for stats: name (linked to its formula), value, one-line meaning. */
export function statRows(rows) {
  return rows.map(([name, value, key]) => {
    const meaning = key ? meaningOf(key) : null;
    return [
      h("dt", {}, meaning ? h("a", { href: meaning[1], target: "_blank", rel: "noopener", title: "formula" }, name) : name),
      h("dd", { dataset: { stat: key || name } }, value, meaning ? h("span", { class: "meaning" }, meaning[0]) : null),
    ];
  });
}

// The engine record holds timings and per-worker detail too (the file has all of it); the
// panel shows what decides the numbers and the speed.
const ENGINE_FACTS = [
  ["device", "device"],
  ["devices", "devices"],
  ["precision", "precision"],
  ["workers", "worker processes"],
  ["points_per_call", "points per call"],
  ["points_per_call_reason", "why"],
  ["method", "method"],
  ["compile_reason", "why compiled"],
  ["batch_size", "batch size"],
  ["bn_folded", "BN layers folded"],
  ["worker_restarts", "worker restarts"],
];

const engineValue = (v) => (v === null || v === undefined || typeof v !== "object" ? v : Array.isArray(v) ? v.join(", ") : null);

const pct = (v) => (typeof v === "number" ? `${(100 * v).toFixed(1)} %` : null);

/** The facts as [section, [[label, value]]], nulls dropped; `job` is the fallback source. */
export function provenanceFacts(surface, job) {
  const p = surface?.provenance || null;
  const request = job?.request || {};
  const train = p ? p.train : request.train || null;
  const final = p?.final || null;
  const lastEpoch = !final && job?.train && job.status === "done" ? job.train : null;
  const dirs = p?.directions || request.directions || null;
  const engine = p?.engine || null;
  const sections = [
    ["Training", train && [
      ["epochs", train.epochs],
      ["loss", train.loss],
      ["optimizer", train.optimizer],
      ["learning rate", train.lr],
      ["momentum", train.momentum],
      ["weight decay", train.weight_decay],
      ["schedule", train.schedule],
      ["warm-up epochs", train.warmup_epochs],
      ["batch size", train.batch_size],
      ["seed", train.seed],
    ]],
    ["Result", final ? [
      ["final train loss", fmt(final.train_loss)],
      ["final train accuracy", pct(final.train_acc)],
      ["final test loss", fmt(final.test_loss)],
      ["final test accuracy", pct(final.test_acc)],
    ] : lastEpoch && [
      ["last epoch's train loss", fmt(lastEpoch.loss)],
      ["last epoch's train accuracy", pct(lastEpoch.acc)],
    ]],
    ["Directions", dirs && [
      ["kind", dirs.kind],
      ["normalization", dirs.normalization],
      ["ignored", dirs.ignore],
      ["seed", dirs.seed],
      // a parameter subset moves only those parameters; the rest of the net stays fixed
      ["parameters", dirs.params?.length ? `${dirs.params.join(", ")} (the rest fixed)` : "all"],
    ]],
    ["Grid", (surface?.grid || request.grid) && [
      ["loss", surface?.loss || request.loss],
      ["points", fmtGrid(surface?.grid || request.grid, surface?.ndim)],
      ["non-finite values", surface?.nonfinite],
    ]],
    ["Engine", engine && ENGINE_FACTS.map(([key, label]) => [label, engineValue(engine[key])])],
    ["Checkpoint", p?.checkpoint_sha256 && [["sha256", p.checkpoint_sha256.slice(0, 16) + "…"]]],
  ];
  return sections
    .map(([name, rows]) => [name, (rows || []).filter(([, v]) => v !== null && v !== undefined && v !== "" && v !== "—")])
    .filter(([, rows]) => rows.length);
}

// A value longer than this (an engine's "why", a loss name) goes below its name, full width:
// beside the name, in a side panel, it was left a column a word wide.
const LONG = 12;

/** The provenance panel (a region named "About this surface"). */
export function provenancePanel(surface, job) {
  const facts = provenanceFacts(surface, job);
  return h(
    "section",
    { class: "provenance", "aria-label": "About this surface" },
    h("h2", { class: "section-title" }, "About this surface"),
    facts.length
      ? facts.map(([name, rows]) =>
          h("div", { class: "provenance-group", dataset: { section: name.toLowerCase() } },
            h("h3", {}, name),
            h("dl", { class: "stats" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { class: String(v).length > LONG ? "long" : null }, String(v))]))))
      : h("p", { class: "hint" }, "No record of how this surface was made (an uploaded checkpoint or a file from elsewhere)."),
    recipeLink(surface),
  );
}

/** The recipe download (docs/recipes.md): everything that made the surface, as JSON that
 * `landscape surface --recipe` or a POST with `{"recipe": …}` rebuilds it from. */
function recipeLink(surface) {
  if (!surface?.id || surface.status === "unreadable") return null;
  return h("p", { class: "recipe" },
    h("a", { class: "recipe-link", href: links.recipe(surface.id), download: `surface-${surface.id}.recipe.json` }, "Recipe (JSON)"),
    " — how this figure was made; ",
    h("code", {}, "landscape surface --recipe"),
    " rebuilds it (docs/recipes.md).");
}
