// Keep a surface up to date while its job runs: load it, find its job, re-load when points come.
//
// The page shows a surface's state in several places (badge, progress bar, point counts,
// plot). They are all drawn from one state, `{surface, job, record}`, handed over whole: a
// job's final event is held back until the surface read after it has arrived, and both are
// handed over together, so no view says "Complete" beside a "partial" copy.

import { api } from "./api.js";
import { throttle } from "./dom.js";
import { ACTIVE, findJob, watchJob } from "./jobs.js";

const points = (job) => job?.progress?.done || 0;

/**
 * Follow surface `id`. Callbacks:
 *   onChange(state)  each time the state changes: `surface` (the latest copy, possibly
 *                    partial, or null before its first points), `job` (the job filling it,
 *                    while known; never for a surface already complete), `record` (the job
 *                    that made or fills it, whatever its status, or null);
 *   onMissing()      no surface and no job with this id;
 *   onError(err)     anything else (ApiError with a plain-words message).
 * The surface is only requested once it has points: while the model trains or the job waits
 * there is nothing to fetch (no 404s). Re-loads are throttled to one per `intervalMs`.
 * Returns stop().
 */
export function followSurface(id, { onChange, onMissing, onError, intervalMs = 1000 }) {
  const state = { surface: null, job: null, record: null };
  let stopped = false;
  let stopWatch = null;
  let latest = 0;
  let shownPoints = -1;
  const publish = () => {
    if (!stopped) onChange({ ...state });
  };

  /** The surface now, or null; a read overtaken by a newer one also answers null. */
  const fetchSurface = async () => {
    const ticket = ++latest;
    try {
      const surface = await api.surface(id);
      return !stopped && ticket === latest ? surface : null;
    } catch (err) {
      if (!stopped && err.status !== 404) onError(err);
      return null;
    }
  };
  const refresh = throttle(async () => {
    const surface = await fetchSurface();
    if (surface) {
      state.surface = surface;
      publish();
    }
  }, intervalMs);

  (async () => {
    let job = null;
    try {
      job = await findJob(id);
    } catch (err) {
      if (err.status !== 404) onError(err);
    }
    if (stopped) return;
    state.record = job;
    // No job (a stored file), a finished job, or points already: the surface exists.
    state.surface = !job || job.status === "done" || points(job) > 0 ? await fetchSurface() : null;
    if (stopped) return;
    if (!job && !state.surface) {
      onMissing();
      return;
    }
    if (job && state.surface?.status !== "complete") state.job = job;
    publish();
    if (!state.job || !ACTIVE.has(job.status)) return;
    shownPoints = points(job);
    stopWatch = watchJob(job.id, {
      onUpdate: (update) => {
        if (!ACTIVE.has(update.status)) return; // the final state comes with its surface (onEnd)
        state.job = update;
        state.record = update;
        publish();
        if (points(update) > shownPoints) {
          shownPoints = points(update);
          refresh();
        }
      },
      onEnd: async (end) => {
        refresh.cancel();
        const surface = end.status === "done" || points(end) > 0 ? await fetchSurface() : null;
        if (stopped) return;
        if (surface) state.surface = surface;
        state.job = end;
        state.record = end;
        publish();
      },
    });
  })();

  return () => {
    stopped = true;
    stopWatch?.();
    refresh.cancel();
  };
}
