// Keep a surface up to date while its job runs: load it, find its job, re-load when points come.

import { api } from "./api.js";
import { throttle } from "./dom.js";
import { ACTIVE, findJob, watchJob } from "./jobs.js";

const points = (job) => job?.progress?.done || 0;

/**
 * Follow surface `id`. Callbacks:
 *   onSurface(surface)  each time a (possibly partial) copy arrives;
 *   onRecord(job)       the job that made or fills it, once, whatever its status (or never);
 *   onJob(job)          when the active job filling it changes (never for finished surfaces);
 *   onMissing()         no surface and no job with this id;
 *   onError(err)        anything else (ApiError with a plain-words message).
 * The surface is only requested once it has points: while the model trains or the job waits
 * there is nothing to fetch (no 404s). Re-loads are throttled to one per `intervalMs`.
 * Returns stop().
 */
export function followSurface(id, { onSurface, onRecord, onJob, onMissing, onError, intervalMs = 1000 }) {
  let stopped = false;
  let stopWatch = null;
  let latest = 0;
  let shownPoints = -1;

  const load = async () => {
    const ticket = ++latest;
    try {
      const surface = await api.surface(id);
      if (!stopped && ticket === latest) onSurface(surface);
      return surface;
    } catch (err) {
      if (!stopped && err.status !== 404) onError(err);
      return null;
    }
  };
  const refresh = throttle(load, intervalMs);

  (async () => {
    let job = null;
    try {
      job = await findJob(id);
    } catch (err) {
      if (err.status !== 404) onError(err);
    }
    if (stopped) return;
    if (job) onRecord?.(job);
    // No job (a stored file), a finished job, or points already: the surface exists.
    const surface = !job || job.status === "done" || points(job) > 0 ? await load() : null;
    if (stopped) return;
    if (!job) {
      if (!surface) onMissing();
      return;
    }
    if (surface && surface.status === "complete") return;
    onJob(job);
    if (!ACTIVE.has(job.status)) return;
    shownPoints = points(job);
    stopWatch = watchJob(job.id, {
      onUpdate: (update) => {
        onJob(update);
        if (points(update) > shownPoints) {
          shownPoints = points(update);
          refresh();
        }
      },
      onEnd: (end) => {
        if (end.status === "done" || points(end) > 0) {
          refresh();
          refresh.flush();
        }
      },
    });
  })();

  return () => {
    stopped = true;
    stopWatch?.();
    refresh.cancel();
  };
}
