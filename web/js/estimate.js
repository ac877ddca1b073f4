// Estimated surfaces (exploration mode, docs/format.md "Estimated surfaces"): the words that
// say what a value rests on, the error view's surface, and the panel with "Make exact".

import { api } from "./api.js";
import { h } from "./dom.js";
import { ACTIVE, progressPanel, watchJob } from "./jobs.js";

const count = (n) => Math.round(n).toLocaleString("en-US");

/** A stated interval's width: "±4.2 %" of the loss (relative targets), else "±0.013". */
function width(estimate, split) {
  const s = estimate.splits?.[split];
  if (!s) return "";
  if (estimate.kind === "relative" && typeof s.loss_halfwidth_rel_max === "number") return `±${Number((100 * s.loss_halfwidth_rel_max).toPrecision(2))} %`;
  if (typeof s.loss_halfwidth_max === "number") return `±${Number(s.loss_halfwidth_max.toPrecision(2))}`;
  return "";
}

/**
 * What one split's values rest on: "exact" (a full pass at every point, also for a surface
 * that was never estimated) or "estimate ±x %, n of N" (the widest stated loss interval, the
 * mean samples read per point of the split's N).
 */
export function estimateWords(surface, split) {
  const estimate = surface?.estimate;
  if (!estimate || estimate.exact) return "exact";
  const name = estimate.splits?.[split] ? split : Object.keys(estimate.splits || {})[0];
  const s = estimate.splits?.[name];
  if (!s) return "estimate";
  const w = width(estimate, name);
  return `estimate${w ? ` ${w}` : ""}, n ${count(s.n_mean)} of ${count(s.N)}`;
}

/** True when a surface's values (or some of them) are estimates, not full passes. */
export function isEstimate(surface) {
  return Boolean(surface?.estimate && !surface.estimate.exact);
}

/**
 * The error view's surface: per point the stated 95 % interval's half-width z·SE of `metric`
 * (as a % of the value for a relative loss target), with the points not yet at their target
 * marked. Returns {surface, metric} to draw as a heatmap.
 */
export function errorSurface(surface, metric) {
  const estimate = surface.estimate;
  const [split, kind] = metric.split("_");
  const z = estimate.splits?.[split]?.z ?? 1.96;
  const se = estimate.se?.[metric] || [];
  const values = surface.values?.[metric] || [];
  const relative = estimate.kind === "relative" && kind === "loss";
  const key = `${split}_${kind} interval ±${relative ? " (%)" : ""}`;
  const grid = se.map((row, i) =>
    row.map((s, j) => {
      if (s === null || s === undefined) return null;
      const v = values[i]?.[j];
      if (!relative) return z * s;
      return v ? (100 * z * s) / Math.abs(v) : null;
    }),
  );
  const marks = { name: "not yet at target", x: [], y: [] };
  (estimate.at_target || []).forEach((row, i) =>
    row.forEach((ok, j) => {
      if (!ok) {
        marks.x.push(surface.x[j]);
        marks.y.push(surface.y[i]);
      }
    }),
  );
  return { surface: { ...surface, values: { [key]: grid }, trajectory: null, marks }, metric: key };
}

/** The method, stated: one sentence, the stored method text and stopping rule. */
function methodText(estimate) {
  return [
    h("p", {}, `Values are estimates from a shared subsample, each within ${estimate.describe} of the loss at ${Math.round(100 * estimate.level)} % confidence, or exact where n = N.`),
    h("p", { class: "hint", dataset: { role: "method" } }, `Method (${estimate.method}): ${estimate.method_text}`),
    h("p", { class: "hint", dataset: { role: "stopping" } }, `Stopping: ${estimate.stopping_rule}.`),
  ];
}

/**
 * The panel of an estimated surface: what its values rest on, the method, and a "Make exact"
 * button that queues the job carrying every point to all N samples and shows its progress.
 * `onDone()` runs when that job ends (the page reloads the surface); `estimating`: the
 * surface's own estimate job still runs. Null for exact surfaces that were never estimated.
 */
export function estimatePanel(surface, { notify, onDone, estimating = false }) {
  const estimate = surface.estimate;
  if (!estimate) return null;
  const splits = Object.keys(estimate.splits || {});
  const lines = splits.map((split) => h("li", { dataset: { split } }, `${split}: ${estimateWords(surface, split)}`));
  const heading = h("h2", { class: "section-title" }, estimate.exact ? "Exact values" : "Estimated values");
  const summary = h("p", { "data-role": "estimate-summary" }, estimate.exact
    ? `Made exact: every point read all samples (${estimate.points} points).`
    : `${estimate.points_exact} of ${estimate.points} points exact, ${estimate.points_at_target} at target ${estimate.describe}.`);
  const slot = h("div", { class: "progress-slot" });
  // While its own estimate job runs the surface cannot be made exact yet (the API says 409).
  const button = h("button", { type: "button", class: "button", hidden: estimate.exact, disabled: estimating, title: estimating ? "Available once the estimate is done" : "" }, "Make exact");
  let stopWatch = null;
  button.addEventListener("click", async () => {
    button.disabled = true;
    section.busy = true; // the page keeps this panel (and its progress) until the job ends
    try {
      const reply = await api.makeExact(surface.id);
      const job = reply.job;
      if (!job || !ACTIVE.has(job.status)) {
        onDone?.();
        return;
      }
      const panel = progressPanel({ label: "Making this surface exact" });
      slot.replaceChildren(panel);
      panel.update(job);
      stopWatch = watchJob(job.id, { onUpdate: (update) => panel.update(update), onEnd: () => onDone?.() });
    } catch (err) {
      button.disabled = false;
      section.busy = false;
      notify?.(`Could not make it exact: ${err.message}`);
    }
  });
  const section = h(
    "section",
    { class: "estimate-box", "aria-label": "Estimate", dataset: { exact: String(Boolean(estimate.exact)) } },
    heading,
    h("ul", { class: "estimate-lines" }, lines),
    summary,
    ...methodText(estimate),
    button,
    slot,
  );
  section.stop = () => stopWatch?.();
  return section;
}
