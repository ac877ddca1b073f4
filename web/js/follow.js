// Keep a surface up to date while its job runs: load it, find its job, re-load on progress.

import { api } from "./api.js";
import { throttle } from "./dom.js";
import { ACTIVE, findJob, watchJob } from "./jobs.js";

/**
 * Follow surface `id`. Callbacks:
 *   onSurface(surface)  each time a (possibly partial) copy arrives;
 *   onJob(job)          when the job filling it changes (never called for finished surfaces);
 *   onMissing()         no surface and no job with this id;
 *   onError(err)        anything else (ApiError with a plain-words message).
 * Re-loads are throttled to one per `intervalMs`. Returns stop().
 */
export function followSurface(id, { onSurface, onJob, onMissing, onError, intervalMs = 1000 }) {
  let stopped = false;
  let stopWatch = null;
  let latest = 0;

  const load = async () => {
    const ticket = ++latest;
    try {
      const surface = await api.surface(id);
      if (!stopped && ticket === latest) onSurface(surface);
    } catch (err) {
      // 404 while the job is still training: the surface file does not exist yet.
      if (!stopped && err.status !== 404) onError(err);
    }
  };
  const refresh = throttle(load, intervalMs);

  (async () => {
    let surface = null;
    try {
      surface = await api.surface(id);
    } catch (err) {
      if (err.status !== 404) return onError(err);
    }
    if (stopped) return;
    if (surface) onSurface(surface);
    if (surface && surface.status === "complete") return;

    let job = null;
    try {
      job = await findJob(id);
    } catch (err) {
      if (!surface) return onError(err);
    }
    if (stopped) return;
    if (!job) {
      if (!surface) onMissing();
      return;
    }
    onJob(job);
    if (!ACTIVE.has(job.status)) {
      if (!surface) refresh();
      return;
    }
    stopWatch = watchJob(job.id, {
      onUpdate: (update) => {
        onJob(update);
        refresh();
      },
      onEnd: () => {
        refresh();
        refresh.flush();
      },
    });
  })();

  return () => {
    stopped = true;
    stopWatch?.();
    refresh.cancel();
  };
}
