// Following a job: server-sent events (polling when the stream fails) and the progress bar.

import { api, links, waitWords } from "./api.js";
import { fmt, fmtDuration, h } from "./dom.js";

export const ACTIVE = new Set(["queued", "running"]);
const FINAL = new Set(["done", "failed", "cancelled"]);

/**
 * The newest job of `kind` for surface `surfaceId` (active ones first), or null. Kinds:
 * "surface" fills the surface; "hessian" adds its curvature analysis (docs/api.md).
 */
export async function findJob(surfaceId, kind = "surface") {
  const jobs = await api.jobs();
  const mine = (jobs || []).filter((job) => job.surface_id === surfaceId && (job.kind || "surface") === kind);
  return mine.find((job) => ACTIVE.has(job.status)) || mine[0] || null;
}

/**
 * Call `onUpdate(job)` whenever job `jobId` changes, until it ends (`onEnd(job)`).
 * Uses EventSource on /api/jobs/{id}/events; falls back to polling when the stream breaks.
 * Returns stop().
 */
export function watchJob(jobId, { onUpdate, onEnd }) {
  let stopped = false;
  let source = null;
  let pollTimer = null;
  let ended = false;

  const finish = (job) => {
    if (ended || stopped) return;
    ended = true;
    stop();
    onUpdate(job);
    onEnd?.(job);
  };
  const handle = (job) => {
    if (stopped || ended || !job) return;
    if (FINAL.has(job.status)) finish(job);
    else onUpdate(job);
  };
  const poll = async () => {
    if (stopped || ended) return;
    try {
      handle(await api.job(jobId));
    } catch {
      // Keep trying: a restarting server comes back.
    }
    if (!stopped && !ended) pollTimer = setTimeout(poll, 1500);
  };
  const parse = (event) => {
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  };

  if (typeof EventSource === "function") {
    source = new EventSource(links.events(jobId));
    source.addEventListener("progress", (event) => handle(parse(event)));
    for (const name of FINAL) {
      source.addEventListener(name, (event) => {
        const job = parse(event);
        // The final event may carry the job; if not, ask for it.
        if (job && job.status) finish(job);
        else api.job(jobId).then(finish, () => finish({ id: jobId, status: name }));
      });
    }
    source.onerror = () => {
      // The stream ended or broke: stop the browser's auto-reconnect and poll instead.
      source?.close();
      source = null;
      if (!stopped && !ended && !pollTimer) poll();
    };
  } else {
    poll();
  }

  function stop() {
    stopped = true;
    source?.close();
    source = null;
    clearTimeout(pollTimer);
  }
  return stop;
}

/** What a surface without points is waiting for, in words. */
export function waitingWords(job) {
  if (job.status === "cancelled") return "Cancelled before any point was computed.";
  if (job.status === "failed") return "The job failed before any point was computed.";
  const queued = queueWords(job);
  return queued ? `Waiting: ${queued}.` : "Waiting for the first points…";
}

/**
 * Training progress of a job, or null: `{percent, text}` while its model trains, e.g.
 * "Training: epoch 3 of 10 (loss 0.42)". `job.train.epoch` counts finished epochs.
 */
export function trainingProgress(job) {
  const train = job.train;
  if (job.stage !== "training" || !train || !train.epochs) return null;
  const percent = Math.min(100, Math.floor((100 * train.epoch) / train.epochs));
  if (!train.epoch) return { percent, text: `Training: starting ${train.epochs} epochs` };
  const loss = typeof train.loss === "number" ? ` (loss ${fmt(train.loss, 2)})` : "";
  return { percent, text: `Training: epoch ${train.epoch} of ${train.epochs}${loss}` };
}

const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/**
 * Where a queued job stands, in words, from its `estimate` (docs/api.md, "The queue"), e.g.
 * "position 1 in the queue (express lane): starts in about 5 s, done by about 14:02" — or ""
 * when the server sent no estimate. The times are the server's estimate from each job's
 * FLOPs and the rate it measured; `estimate.basis` says which rate.
 */
export function queueWords(job) {
  const estimate = job.estimate;
  if (!estimate || job.status !== "queued" || !estimate.position) return "";
  const lane = estimate.lane === "express" ? " (express lane for short jobs)" : "";
  const ahead = estimate.position - 1;
  const behind = ahead ? `, ${ahead} job${ahead === 1 ? "" : "s"} ahead` : ", next to start";
  const wait = (Date.parse(estimate.start_at) - Date.now()) / 1000;
  const starts = wait > 5 ? `starts in about ${fmtDuration(wait)} (${clock(estimate.start_at)})` : "starts now";
  const ends = estimate.end_at ? `, done by about ${clock(estimate.end_at)}` : "";
  return `position ${estimate.position} in the queue${lane}${behind}: ${starts}${ends}`;
}

/** "about 2 min 10 s on this server" from an estimate, or "" when its length is unknown. */
export function costWords(estimate) {
  if (!estimate || estimate.seconds === null || estimate.seconds === undefined) return "";
  return `about ${fmtDuration(estimate.seconds)} on this server`;
}

const STAGE_WORDS = {
  queued: "Waiting in the queue",
  training: "Training the model",
  directions: "Finding the Hessian directions",
  computing: "Computing grid points",
  estimating: "Estimating",
  exact: "Making exact",
  finished: "Finished",
};

/**
 * A progress panel: role=progressbar with aria-valuenow, stage, ETA and a Cancel button.
 * `panel.update(job)` redraws it. Announcements go through an aria-live status line.
 * `unit` names what `progress` counts ("points" of a surface, "steps" of an analysis) and
 * `computing` the words for the computing stage.
 */
export function progressPanel({ label = "Progress", onCancel, onResume, unit = "points", computing } = {}) {
  const stageWords = { ...STAGE_WORDS, ...(computing ? { computing } : {}) };
  const fill = h("div", { class: "progress-fill" });
  const bar = h(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": "0",
    },
    fill,
  );
  // The visible line changes on every event; the live region only on stage changes and every
  // 10%, so screen readers are not flooded.
  const status = h("p", { class: "progress-text", "aria-hidden": "true" }, "Starting…");
  const live = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "button button-quiet" }, "Cancel");
  const resume = h("button", { type: "button", class: "button", hidden: true }, "Resume");
  const actions = h("div", { class: "progress-actions" }, cancel, resume);
  const panel = h("section", { class: "progress-panel", "aria-label": label }, bar, status, live, actions);
  let jobId = null;

  cancel.addEventListener("click", async () => {
    if (!jobId) return;
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    try {
      await api.cancelJob(jobId);
    } catch (err) {
      cancel.disabled = false;
      cancel.textContent = "Cancel";
      status.textContent = `Could not cancel: ${err.message}`;
      live.textContent = status.textContent;
      return;
    }
    onCancel?.();
  });

  // A cancelled or failed job resumes from its finished points when the same request is
  // sent again (docs/api.md: identical specs share one surface file).
  let lastJob = null;
  resume.addEventListener("click", async () => {
    if (!lastJob?.request) return;
    resume.disabled = true;
    try {
      const reply = await api.createSurface(lastJob.request, {
        onWait: (err, attempt) => {
          status.textContent = waitWords(err, attempt);
          live.textContent = status.textContent;
        },
      });
      onResume?.(reply);
    } catch (err) {
      status.textContent = `Could not resume: ${err.message}`;
      live.textContent = status.textContent;
    } finally {
      resume.disabled = false;
    }
  });

  let lastAnnounced = -1;
  panel.update = (job) => {
    jobId = job.id;
    const { done = 0, total = 0 } = job.progress || {};
    let percent = total > 0 ? Math.floor((100 * done) / total) : 0;
    if (job.status === "done") percent = 100;
    lastJob = job;
    // While the model trains the bar counts epochs; then it starts over for the points.
    const training = ACTIVE.has(job.status) ? trainingProgress(job) : null;
    if (training) percent = training.percent;
    // Before the first point (queued, or training without epoch counts) the bar is
    // indeterminate: no aria-valuenow.
    const indeterminate = ACTIVE.has(job.status) && done === 0 && !["computing", "estimating", "exact"].includes(job.stage) && !training;
    if (indeterminate) {
      bar.removeAttribute("aria-valuenow");
      bar.setAttribute("aria-valuetext", stageWords[job.stage] || "Starting");
    } else {
      bar.setAttribute("aria-valuenow", String(percent));
      bar.setAttribute("aria-valuetext", `${percent}%`);
    }
    fill.style.width = indeterminate ? "" : `${percent}%`;
    panel.classList.toggle("progress-indeterminate", indeterminate);
    panel.dataset.status = job.status;
    panel.dataset.stage = job.stage || "";
    let text;
    if (job.status === "done") text = `Complete: ${total || done} of ${total || done} ${unit}.`;
    else if (job.status === "failed") text = `Failed: ${job.error || "the job stopped with an error."}`;
    else if (job.status === "cancelled") text = `Cancelled after ${done} of ${total} ${unit}.`;
    else if (training) {
      const eta = job.eta_seconds ? `, about ${fmtDuration(job.eta_seconds)} left` : "";
      text = `${training.text}${eta}.`;
    } else if (queueWords(job)) {
      text = `Waiting: ${queueWords(job)}.`;
    } else {
      // estimating: "estimate stage k of K", the points counted once at their target
      const detail = job.stage === "estimating" && job.stage_detail;
      const stage = detail ? detail[0].toUpperCase() + detail.slice(1) : stageWords[job.stage] || "Working";
      const what = job.stage === "directions" ? "Lanczos steps" : job.stage === "estimating" ? "points at target" : job.stage === "exact" ? "points exact" : unit;
      const points = total ? ` — ${done} of ${total} ${what} (${percent}%)` : "";
      const eta = job.eta_seconds ? `, about ${fmtDuration(job.eta_seconds)} left` : "";
      text = `${stage}${points}${eta}.`;
    }
    status.title = job.estimate?.basis ? `Estimate: ${job.estimate.basis}` : "";
    status.textContent = text;
    const bucket = `${job.status}:${job.stage}:${Math.floor(percent / 10)}:${job.estimate?.position || ""}`;
    if (bucket !== lastAnnounced) {
      lastAnnounced = bucket;
      live.textContent = text;
    }
    cancel.hidden = !ACTIVE.has(job.status);
    resume.hidden = !(onResume && (job.status === "cancelled" || job.status === "failed") && job.request);
    actions.hidden = cancel.hidden && resume.hidden;
  };
  return panel;
}
