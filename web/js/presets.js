// Ready-made comparisons: the degradation problem (Li et al. 2018, Fig. 5), one click away.
// The server lists them (GET /api/config) with the demo's own requests, so on a demo server
// a preset opens the surfaces already computed. Before anything is queued the server says what
// a preset would start and how long it would take (POST /api/jobs/estimate) and the page asks;
// a surface whose last job was cancelled is resumed only when the user ticks it.

import { api, request } from "./api.js";
import { fmtDuration, h } from "./dom.js";
import { costWords, queueWords } from "./jobs.js";

/** The presets: [{id, title, requests}]. */
export async function presets() {
  return (await api.config()).presets || [];
}

const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/** What starting one request would do, in words. */
function actionWords(item) {
  const estimate = item.estimate;
  const by = estimate?.end_at ? `, done by about ${clock(estimate.end_at)}` : "";
  if (item.action === "cached") return "computed already: opens at once";
  if (item.action === "active") {
    if (item.job?.status === "running") return `running now${by}`;
    return `already in the queue (position ${estimate?.position ?? "?"})${by}`;
  }
  const cost = costWords(estimate);
  const queue = queueWords({ status: "queued", estimate });
  const where = queue ? `; ${queue}` : by;
  if (item.action === "resume") {
    const { done = 0, total = 0 } = item.job?.progress || {};
    const unit = item.kind === "report" ? "steps" : "points";
    return `${item.job?.status || "cancelled"} after ${done} of ${total} ${unit}; resuming queues it again (${cost || "cost unknown"}${where})`;
  }
  return `new job: ${cost || "cost unknown"}${where}`;
}

/**
 * Ask before queueing: a modal listing each request's action, its place in the queue, the
 * total estimated time and the rate it rests on; resolves to the ids to resume (a Set) or
 * null when declined. Presets and the reports page ask with it.
 */
export function confirmPlan(title, plan) {
  const resumes = plan.jobs.filter((item) => item.action === "resume");
  const boxes = new Map();
  const rows = plan.jobs.map((item) => {
    const words = h("span", { class: "plan-words" }, actionWords(item));
    if (item.action !== "resume") return h("li", { dataset: { action: item.action } }, h("strong", {}, item.label), " — ", words);
    const box = h("input", { type: "checkbox", id: `resume-${item.id}`, value: item.id });
    boxes.set(item.id, box);
    return h("li", { dataset: { action: item.action } }, h("label", { for: box.id }, box, " Resume ", h("strong", {}, item.label)), " — ", words);
  });
  const fresh = plan.jobs.filter((item) => item.action === "new");
  const total = fresh.reduce((sum, item) => sum + (item.estimate?.seconds ?? NaN), 0);
  const summary = fresh.length
    ? `Starting queues ${fresh.length} new job${fresh.length === 1 ? "" : "s"}: about ${Number.isFinite(total) ? fmtDuration(total) : "an unknown time"} of computing on this server.`
    : "Starting queues no new job.";
  const start = h("button", { type: "submit", class: "button button-primary", value: "start" }, "Start");
  const decline = h("button", { type: "button", class: "button button-quiet" }, "Don’t start");
  const dialog = h(
    "dialog",
    { class: "plan-dialog", "aria-labelledby": "plan-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "plan-title" }, `Start “${title}”?`),
      h("ul", { class: "plan-list" }, rows),
      h("p", { class: "plan-summary" }, summary),
      resumes.length ? h("p", { class: "hint" }, "Cancelled jobs are resumed only if ticked; unticked they open as they were left.") : null,
      h("p", { class: "hint" }, `Estimates: ${plan.basis}.`),
      h("div", { class: "form-actions" }, start, decline),
    ),
  );
  document.body.append(dialog);
  return new Promise((resolve) => {
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      close(new Set([...boxes].filter(([, box]) => box.checked).map(([id]) => id)));
    });
    decline.addEventListener("click", () => close(null));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault(); // Escape: the same as "Don't start"
      close(null);
    });
    dialog.showModal();
    start.focus();
  });
}

/**
 * Start a preset after saying what it costs: POST the requests that need a new job (and the
 * cancelled ones the user chose to resume); resolves to every surface id of the preset, or
 * null when the user declined. When nothing would be queued it opens without asking.
 */
export async function startPreset(preset) {
  const plan = await request("POST", "/api/jobs/estimate", { body: { surfaces: preset.requests } });
  let resume = new Set();
  if (plan.jobs.some((item) => item.action === "new" || item.action === "resume")) {
    resume = await confirmPlan(preset.title, plan);
    if (resume === null) return null;
  }
  const wanted = plan.jobs.map((item, index) => [item, preset.requests[index]]);
  const posts = wanted
    .filter(([item]) => item.action === "new" || (item.action === "resume" && resume.has(item.id)))
    .map(([, spec]) => api.createSurface(spec));
  await Promise.all(posts);
  return plan.jobs.map((item) => item.id);
}
