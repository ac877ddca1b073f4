// #/ — every stored surface as a card with a small preview; pick two or more to compare.
// While jobs run, the cards of their surfaces (status, numbers, preview) refresh with the job
// list (every few seconds), once more when a job ends, and new surfaces get a card.
// A surface whose last job was cancelled (or failed) keeps its card, marked so, with Resume —
// also when the job ended before the surface had a file (the surface listing lacks those).

import { api, waitWords } from "../api.js";
import { badge, fmt, fmtGrid, h, replace, statLabel } from "../dom.js";
import { estimateWords, isEstimate } from "../estimate.js";
import { ACTIVE, queueWords, trainingProgress } from "../jobs.js";
import { drawPreview } from "../preview.js";
import { presetButtons } from "./shared.js";

const PREVIEW_POINTS = 32;
const KEY_STATS = ["train_loss_min", "train_loss_center", "sharpness"];
const PERCENT_STATS = new Set(["sharpness", "sharpness_mean"]); // docs/metrics.md: in percent
const STOPPED = new Set(["cancelled", "failed"]);
const JOBS_EVERY_MS = 3000;

export async function render(root, _params, { notify, navigate }) {
  const selected = new Set();
  const compareButton = h("button", { type: "button", class: "button button-primary", disabled: true }, "Compare selected");
  const compareHint = h("span", { class: "hint", "aria-live": "polite" }, "Select two or more surfaces to compare them.");
  compareButton.addEventListener("click", () => navigate(`/compare/${[...selected].join(",")}`));
  const updateCompare = () => {
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
    compareHint.textContent =
      selected.size < 2 ? "Select two or more surfaces to compare them." : `${selected.size} surfaces selected.`;
  };

  const jobsBox = h("section", { class: "jobs", "aria-label": "Jobs in progress", hidden: true });
  const list = h("div", { class: "cards", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading surfaces…"));

  replace(
    root,
    h(
      "div",
      { class: "view-header" },
      h("div", {}, h("h1", {}, "Loss surfaces"), h("p", { class: "lead" }, "Filter-normalized loss landscapes: open one to explore it in 3D, or compare several side by side.")),
      h("div", { class: "header-actions" }, h("a", { class: "button button-primary", href: "#/new" }, "New surface")),
    ),
    h("section", { class: "presets", "aria-labelledby": "presets-title" },
      h("h2", { id: "presets-title", class: "section-title" }, "Try a comparison"),
      presetButtons({ notify, navigate })),
    jobsBox,
    h("div", { class: "compare-bar" }, compareButton, compareHint),
    list,
  );

  // Previews are fetched (downsampled) only when their card scrolls into view.
  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        observer.unobserve(entry.target);
        loadPreview(entry.target);
      }
    },
    { rootMargin: "200px" },
  );

  let surfaces;
  let stopped;
  try {
    [surfaces, stopped] = await Promise.all([api.surfaces(), stoppedSurfaceJobs()]);
  } catch (err) {
    replace(list, h("p", { class: "error-text", role: "alert" }, `Could not load the surfaces: ${err.message}`));
    list.removeAttribute("aria-busy");
    return () => observer.disconnect();
  }
  list.removeAttribute("aria-busy");
  const resume = { notify, navigate };
  const listed = new Set(surfaces.map((s) => s.id));
  const withoutFile = [...stopped.values()].filter((job) => !listed.has(job.surface_id));
  if (!surfaces.length && !withoutFile.length) {
    replace(
      list,
      h("div", { class: "empty" },
        h("p", {}, "No surfaces yet."),
        h("p", {}, h("a", { href: "#/new" }, "Request one"), " or start a comparison above.")),
    );
  } else {
    replace(list, [
      ...withoutFile.map((job) => stoppedCard(job, resume)),
      ...surfaces.map((s) => card(s, selected, updateCompare, observer, stopped.get(s.id), resume)),
    ]);
  }

  // Surfaces whose job was active at the last look: one more refresh when the job ends.
  let following = new Set();
  const refreshCards = async (activeJobs) => {
    const active = new Set(activeJobs.map((job) => job.surface_id).filter(Boolean));
    const wanted = new Set([...active, ...following]);
    following = active;
    if (!wanted.size) return;
    let latest;
    try {
      latest = await api.surfaces(); // summaries only: cheap, and shows surfaces new since load
    } catch {
      return; // the next tick tries again
    }
    const fresh = [];
    for (const summary of latest) {
      const el = list.querySelector(`article.card[data-id="${CSS.escape(summary.id)}"]`);
      if (!el) fresh.push(card(summary, selected, updateCompare, observer));
      else if (wanted.has(summary.id)) updateCard(el, summary);
    }
    if (fresh.length) {
      list.querySelector(".empty")?.remove();
      list.prepend(...fresh);
    }
  };

  const stopJobs = pollJobs(jobsBox, refreshCards);
  return () => {
    observer.disconnect();
    stopJobs();
  };
}

/** The newest surface job of each surface, where that job was cancelled or failed: Map id → job. */
async function stoppedSurfaceJobs() {
  const latest = new Map();
  for (const job of (await api.jobs()) || []) {
    if ((job.kind || "surface") !== "surface" || !job.surface_id || latest.has(job.surface_id)) continue;
    latest.set(job.surface_id, job); // the list is newest first
  }
  return new Map([...latest].filter(([, job]) => STOPPED.has(job.status)));
}

/** "Resume" for a cancelled or failed surface job: the same request again continues it. */
function resumeButton(job, { notify, navigate }) {
  const button = h("button", { type: "button", class: "button", dataset: { resume: job.surface_id } }, "Resume");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const reply = await api.createSurface(job.request, { onWait: (err, attempt) => notify(waitWords(err, attempt), "info") });
      navigate(`/surfaces/${encodeURIComponent(reply.surface?.id || reply.job?.surface_id || job.surface_id)}`);
    } catch (err) {
      notify(`Could not resume “${job.label || job.surface_id}”: ${err.message}`);
      button.disabled = false;
    }
  });
  return button;
}

const stoppedWords = (job) =>
  `${job.status === "failed" ? "failed" : "cancelled"} after ${job.progress?.done || 0} of ${job.progress?.total || 0} points`;

/** A card for a surface whose job stopped before its file existed: no preview, no numbers. */
function stoppedCard(job, resume) {
  const id = job.surface_id;
  const href = `#/surfaces/${encodeURIComponent(id)}`;
  const request = job.request || {};
  const grid = request.grid ? fmtGrid(request.grid, request.grid.ny ? 2 : 1) : "";
  const meta = [request.model || "uploaded checkpoint", request.dataset || "digits", grid].filter(Boolean).join(" · ");
  const el = h(
    "article",
    { class: "card card-stopped", "aria-labelledby": `title-${id}`, dataset: { id, status: job.status } },
    h("div", { class: "preview preview-empty", "aria-hidden": "true" }),
    h(
      "div",
      { class: "card-body" },
      h("h3", { class: "card-title", id: `title-${id}` }, h("a", { href }, job.label || id)),
      h("p", { class: "card-meta" }, meta),
      h("p", { class: "card-status" }, badge(job.status), ` · ${stoppedWords(job)}`),
      h("div", { class: "card-actions" }, resumeButton(job, resume)),
    ),
  );
  return el;
}

function card(surface, selected, onSelect, observer, stoppedJob = null, resume = null) {
  const href = `#/surfaces/${encodeURIComponent(surface.id)}`;
  const title = surface.label || `${surface.model} on ${surface.dataset}`;
  const canvas = h("canvas", { class: "preview", width: 240, height: 150, "aria-hidden": "true" });
  canvas.dataset.id = surface.id;
  canvas.dataset.metric = surface.metrics?.includes("train_loss") ? "train_loss" : surface.metrics?.[0] || "";
  const checkbox = h("input", { type: "checkbox", id: `pick-${surface.id}`, value: surface.id });
  checkbox.addEventListener("change", () => {
    if (checkbox.checked) selected.add(surface.id);
    else selected.delete(surface.id);
    onSelect();
  });
  const el = h(
    "article",
    { class: "card", "aria-labelledby": `title-${surface.id}`, dataset: { id: surface.id } },
    h("a", { href, class: "preview-link", tabindex: "-1", "aria-hidden": "true" }, canvas),
    h("div", { class: "legend-slot" }),
    h(
      "div",
      { class: "card-body" },
      h("h3", { class: "card-title", id: `title-${surface.id}` }, h("a", { href }, title)),
      h("p", { class: "card-meta" }, `${surface.model} · ${surface.dataset} · ${fmtGrid(surface.grid, surface.ndim)}`),
      h("p", { class: "card-status" }, ...cardStatus(surface, stoppedJob)),
      h("div", { class: "card-stats" }, cardStats(surface)),
      h(
        "div",
        { class: "card-actions" },
        h("label", { class: "check", for: `pick-${surface.id}` }, checkbox, " Compare"),
        stoppedJob && surface.status !== "complete" ? resumeButton(stoppedJob, resume) : null,
      ),
    ),
  );
  el.dataset.done = String(surface.done);
  el.dataset.status = surface.status;
  observer.observe(canvas);
  return el;
}

function cardStatus(surface, stoppedJob = null) {
  const progress =
    surface.status === "partial" && surface.total
      ? ` · ${Math.floor((100 * surface.done) / surface.total)}% computed`
      : "";
  // an estimated surface's card says so: "estimate ±4 %, n 1,024 of 50,000"
  const estimate = isEstimate(surface) ? ` · ${estimateWords(surface, "train")}` : "";
  if (stoppedJob && surface.status === "partial") return [badge(stoppedJob.status), progress, estimate];
  return [badge(surface.status), progress, estimate];
}

function cardStats(surface) {
  const stats = KEY_STATS.filter((k) => surface.stats && surface.stats[k] !== undefined && surface.stats[k] !== null);
  return stats.length
    ? h("dl", { class: "stats stats-compact" }, stats.map((k) => [h("dt", {}, statLabel(k)), h("dd", {}, statValue(k, surface.stats[k]))]))
    : null;
}

const statValue = (key, value) => (PERCENT_STATS.has(key) ? `${fmt(value)} %` : fmt(value));

/** New facts for a card; its preview is re-fetched only when it has points it did not show. */
function updateCard(el, surface) {
  if (el.dataset.done === String(surface.done) && el.dataset.status === surface.status) return;
  el.dataset.done = String(surface.done);
  el.dataset.status = surface.status;
  replace(el.querySelector(".card-status"), ...cardStatus(surface));
  replace(el.querySelector(".card-stats"), cardStats(surface));
  const canvas = el.querySelector("canvas.preview");
  // A preview not drawn yet loads when its card scrolls into view, already up to date.
  if (canvas?.dataset.loaded) loadPreview(canvas);
}

async function loadPreview(canvas) {
  if (!canvas.dataset.metric) return;
  // A slow old reply must not paint over a newer one.
  const ticket = (canvas.ticket = (canvas.ticket || 0) + 1);
  try {
    const surface = await api.surface(canvas.dataset.id, { maxPoints: PREVIEW_POINTS });
    if (ticket !== canvas.ticket) return;
    const legend = drawPreview(canvas, surface, canvas.dataset.metric);
    const slot = canvas.closest(".card")?.querySelector(".legend-slot");
    if (slot) replace(slot, legend);
    canvas.dataset.loaded = "true";
    canvas.classList.remove("preview-failed");
  } catch {
    if (ticket === canvas.ticket) canvas.classList.add("preview-failed");
  }
}

/** Jobs in the order they run: running ones (oldest start first), then the queue by its
 * position (the server's estimate), else by age. The API lists newest first. */
function runOrder(jobs) {
  const time = (iso) => (iso ? Date.parse(iso) : Infinity);
  const key = (job) =>
    job.status === "running"
      ? [0, time(job.started_at || job.created_at)]
      : [1, job.estimate?.position ?? Infinity, time(job.created_at)];
  return [...jobs].sort((a, b) => {
    const [ka, kb] = [key(a), key(b)];
    for (let k = 0; k < ka.length; k++) if (ka[k] !== kb[k]) return ka[k] < kb[k] ? -1 : 1;
    return 0;
  });
}

/**
 * List running jobs (they may not have a surface file yet); refreshed while any is active.
 * `onJobs(activeJobs)` runs after each look, including the first with none left.
 */
function pollJobs(box, onJobs) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    let jobs = [];
    try {
      jobs = runOrder((await api.jobs()).filter((job) => ACTIVE.has(job.status)));
    } catch {
      jobs = [];
    }
    if (stopped) return;
    box.hidden = !jobs.length;
    replace(
      box,
      jobs.length ? h("h2", { class: "section-title" }, "In progress") : null,
      jobs.length > 1 ? h("p", { class: "hint" }, "Running first, then the queue in the order it will run.") : null,
      h(
        "ul",
        { class: "job-list" },
        jobs.map((job) => {
          const { done = 0, total = 0 } = job.progress || {};
          const training = trainingProgress(job);
          const percent = training ? training.percent : total ? Math.floor((100 * done) / total) : 0;
          const name = job.label || job.request?.model || job.id;
          return h(
            "li",
            {},
            job.kind === "report"
              ? h("a", { href: "#/reports" }, name)
              : job.surface_id ? h("a", { href: `#/surfaces/${encodeURIComponent(job.surface_id)}` }, name) : name,
            " ",
            badge(job.stage || job.status),
            h("span", { class: "mini-progress", role: "progressbar", "aria-label": `${name} progress`, "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(percent) },
              h("span", { style: `width:${percent}%` })),
            h("span", { class: "hint" }, training ? training.text : queueWords(job) || `${percent}%`),
          );
        }),
      ),
    );
    await onJobs(jobs);
    if (stopped) return;
    if (jobs.length) timer = setTimeout(tick, JOBS_EVERY_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
