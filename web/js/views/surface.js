// #/surfaces/{id} — one surface: 3D / contour / heatmap (or the 1D curve), live while computing.

import { api, links } from "../api.js";
import { badge, fmt, fmtGrid, h, metricLabel, replace, statLabel } from "../dom.js";
import { provenancePanel, statRows } from "../provenance.js";
import { deleteSurfaceButton } from "../delete.js";
import { errorSurface, estimatePanel, estimateWords } from "../estimate.js";
import { followSurface } from "../follow.js";
import { gradientFlowPanel } from "../flow.js";
import { sharpnessPanel } from "../sharpness.js";
import { curvaturePanel } from "../hessian.js";
import { ACTIVE, progressPanel, waitingWords } from "../jobs.js";
import { downloadPng, draw, hasWebGL, pngName, pngTitle, purge, scaleFor } from "../plots.js";
import { previewLabel, previewSurface } from "../partial.js";
import { volumeView } from "../volume.js";
import { metricChoices, plotControls } from "./shared.js";

export async function render(root, [rawId], { notify, navigate }) {
  const id = rawId;
  const state = { view: hasWebGL() ? "surface" : "contour", split: "train", kind: "loss", log: null, range: [null, null] }; // log null: automatic
  let surface = null;
  let controlsBuilt = false;
  let controls = null;

  const title = h("h1", {}, "Surface");
  const meta = h("p", { class: "meta" }, "Loading…");
  const actions = h("div", { class: "header-actions" });
  const progressBox = h("div", { class: "progress-slot" });
  const controlsBox = h("div", { class: "controls-slot" });
  const plot = h("div", { id: "plot", class: "plot plot-main", role: "figure", "aria-label": "Surface plot", dataset: { surfaceId: id, placeholder: "The plot appears with the first computed points." } });
  const plotNote = h("p", { class: "hint plot-note", "aria-live": "polite" });
  // Above the plot, so it is on screen whenever the plot is: a partial surface is a preview.
  const previewFlag = h("p", { class: "preview-flag", "aria-live": "polite" });
  const statsBox = h("section", { class: "stats-box", "aria-label": "Statistics" });
  statsBox.append(h("h2", { class: "section-title" }, "Numbers"), h("p", { class: "hint" }, "They appear with the first computed points."));
  const aboutBox = h("div", { class: "about-slot" });
  const estimateBox = h("div", { class: "estimate-slot" });
  let estimateView = null; // the estimate panel; kept while its "Make exact" job runs
  let job = null; // the job filling this surface, while known: the one source of point counts
  let record = null; // the job that made or fills it, for "About this surface"
  // Fetched again when an analysis finishes: the numbers live in the surface's reply.
  const curvature = curvaturePanel(id, {
    notify,
    onComputed: () => api.surface(id).then((fresh) => showState({ surface: fresh, job, record }), (err) => notify(err.message)),
  });
  curvature.hidden = true; // until the surface exists
  const flow = gradientFlowPanel([], { notify });
  flow.hidden = true;
  const sharpness = sharpnessPanel(id, { notify });
  sharpness.hidden = true;

  replace(
    root,
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Gallery"), " / ", h("span", { "aria-current": "page" }, id)),
    h("div", { class: "view-header" }, h("div", {}, title, meta), actions),
    progressBox,
    controlsBox,
    h("div", { class: "plot-layout" }, h("div", { class: "plot-frame" }, previewFlag, plot, plotNote), h("div", { class: "side" }, estimateBox, statsBox, aboutBox)),
    curvature,
    flow,
    sharpness,
  );
  const webglNote = hasWebGL() ? "" : "This browser cannot draw WebGL, so 3D surfaces are off; contour and heatmap work.";
  plotNote.textContent = webglNote;

  let panel = null;
  let volume = null; // a 3D surface's view (isosurface + z slider), made on first draw
  const activeJob = () => (job && ACTIVE.has(job.status) ? job : null);
  const redraw = async () => {
    if (!surface) return;
    const metric = `${state.split}_${state.kind}`;
    const metrics = surface.metrics || Object.keys(surface.values || {});
    const chosen = metrics.includes(metric) ? metric : metrics[0];
    plot.setAttribute("aria-label", `${metricLabel(chosen)} of ${surface.label || surface.model}, ${surface.ndim === 1 ? "curve" : state.view}`);
    try {
      const scale = scaleFor([surface], chosen, { log: state.log, range: state.range });
      controls?.setLog(scale.log);
      if (surface.ndim === 3) {
        if (!volume) {
          volume = volumeView(surface.label || surface.model);
          plot.hidden = true;
          plot.after(volume.element);
        }
        previewFlag.textContent = "";
        await volume.update(surface, { metric: chosen, view: state.view, scale });
        return;
      }
      if (state.view === "error" && surface.estimate && surface.ndim === 2) {
        // z·SE per point as a heatmap, the points not yet at their target circled
        const error = errorSurface(surface, chosen);
        plot.dataset.view = "error";
        previewFlag.textContent = "";
        plotNote.textContent = `Error view: the stated ${Math.round(100 * surface.estimate.level)} % interval's half-width at each point; circles: not yet at the target ${surface.estimate.describe}.`;
        await draw(plot, error.surface, { metric: error.metric, view: "heatmap", scale: scaleFor([error.surface], error.metric, {}) });
        plot.dataset.ready = "true";
        return;
      }
      plot.dataset.view = state.view;
      // Partial: the shape through the complete lattice of points so far, marked as such.
      const shown = previewSurface(surface);
      plotNote.textContent = webglNote;
      previewFlag.textContent = shown.preview ? previewLabel(shown.preview, chosen) : "";
      if (shown.preview) plot.dataset.preview = shown.preview.lattices[chosen] ? "lattice" : "points";
      else delete plot.dataset.preview;
      await draw(plot, shown, { metric: chosen, view: state.view, scale });
      plot.dataset.ready = "true";
    } catch (err) {
      notify(err.message);
    }
  };

  /** The header (title, badge) and the numbers of the surface. */
  const showSurface = (next) => {
    surface = next;
    const name = surface.label || `${surface.model} on ${surface.dataset}`;
    title.textContent = name;
    document.title = `${name} · landscape`;
    replace(
      meta,
      `${surface.model} · ${surface.dataset} · ${fmtGrid(surface.grid, surface.ndim)} · `,
      badge(surface.status),
      // While a job runs its progress bar carries the count: one source, no disagreement.
      surface.status === "partial" && !activeJob() ? ` ${surface.done} of ${surface.total} points` : "",
    );
    if (!controlsBuilt) {
      controlsBuilt = true;
      const { splits, kinds } = metricChoices(surface.metrics || []);
      state.split = splits.includes(state.split) ? state.split : splits[0] || "train";
      state.kind = kinds.includes(state.kind) ? state.kind : kinds[0] || "loss";
      const onChange = () => {
        replace(statsBox, statsList(surface, state.split, activeJob()));
        redraw();
      };
      controls = plotControls(state, { splits, kinds, ndim: surface.ndim, onChange, error: Boolean(surface.estimate) && surface.ndim === 2 });
      replace(controlsBox, controls);
      const onDeleted = () => navigate("/");
      replace(actions, downloads(surface, plot, notify), deleteSurfaceButton(surface, { onDeleted, notify }));
    }
    replace(statsBox, statsList(surface, state.split, activeJob()));
  };

  /** The parts that change with the surface's values, not with each progress event. */
  const showValues = () => {
    if (!estimateView?.busy) {
      estimateView?.stop();
      estimateView = estimatePanel(surface, {
        notify,
        estimating: Boolean(activeJob()),
        onDone: () => {
          if (estimateView) estimateView.busy = false;
          api.surface(id).then((fresh) => showState({ surface: fresh, job, record }), (err) => notify(err.message));
        },
      });
      replace(estimateBox, estimateView || "");
    }
    curvature.hidden = false;
    curvature.update(surface);
    flow.hidden = false;
    flow.update([{ id, label: surface.label || `${surface.model} on ${surface.dataset}`, complete: surface.status === "complete", stored: Boolean(surface.gradient_flow) }]);
    sharpness.hidden = false;
    sharpness.update(surface);
    redraw();
  };

  // Everything the page says about the surface's state (badge, progress bar, point counts,
  // numbers) is drawn here in one pass, from one state handed over whole (followSurface).
  const showState = (next) => {
    const fresh = next.surface && next.surface !== surface;
    const wasActive = Boolean(activeJob());
    job = next.job;
    record = next.record;
    if (job) {
      if (!panel) {
        panel = progressPanel({ label: "Computing this surface", onResume: () => navigate(`/surfaces/${id}`) });
        replace(progressBox, panel);
      }
      panel.update(job);
    }
    if (next.surface) showSurface(next.surface);
    else if (job?.stage) {
      title.textContent = job.label || job.request?.model || "New surface";
      replace(meta, waitingWords(job));
    }
    replace(aboutBox, provenancePanel(surface, record));
    if (surface && (fresh || wasActive !== Boolean(activeJob()))) showValues();
  };

  const stop = followSurface(id, {
    onChange: showState,
    onMissing: () => {
      title.textContent = "Surface not found";
      replace(meta, "There is no surface or job with this id. ", h("a", { href: "#/" }, "Back to the gallery"), ".");
    },
    onError: (err) => notify(err.message),
  });

  return () => {
    stop();
    estimateView?.stop();
    curvature.stop();
    flow.stop();
    sharpness.stop();
    volume?.destroy();
    purge(plot);
  };
}

function downloads(surface, plot, notify) {
  const png = h("button", { type: "button", class: "button" }, "PNG");
  png.addEventListener("click", () =>
    downloadPng(plot, pngName(surface), { title: pngTitle(surface) }).catch((err) => notify(`Could not save the PNG: ${err.message}`)),
  );
  return h(
    "div",
    { class: "downloads", role: "group", "aria-label": "Download" },
    h("span", { class: "hint" }, "Download"),
    h("a", { class: "button", href: links.file(surface.id), download: `surface-${surface.id}.h5` }, "HDF5"),
    h("a", { class: "button", href: links.html(surface.id), download: `surface-${surface.id}.html` }, "HTML"),
    png,
    h("a", { class: "button", href: `#/compare/${encodeURIComponent(surface.id)}` }, "Compare…"),
  );
}

/** The surface's numbers for one split ("train_loss_min" shown as "loss min" under "train"). */
function statsList(surface, split, job) {
  const all = Object.entries(surface.stats || {}).filter(([, v]) => v !== null && v !== undefined);
  const prefix = `${split}_`;
  const mine = all.filter(([k]) => k.startsWith(prefix));
  const stats = mine.length ? mine.map(([k, v]) => [k.slice(prefix.length), v]) : all;
  stats.sort(([a], [b]) => a.localeCompare(b));
  const path = surface.trajectory;
  const rows = [
    // "estimate ±4 %, n 1,024 of 50,000" or "exact": what every number below rests on
    ["values", estimateWords(surface, split)],
    ["points", job ? `${job.progress?.done ?? 0} of ${job.progress?.total ?? surface.total}` : `${surface.done} of ${surface.total}`],
    ["created", surface.created ? new Date(surface.created).toLocaleString() : "—"],
    // PCA surfaces: the plot draws the training path; its variance share is on the axes.
    ...(path ? [["directions", `PCA of ${path.epochs.length} snapshots`], ["explained variance", path.explained_variance.map((r) => `${(100 * r).toFixed(1)} %`).join(" + ")]] : []),
    ...stats.map(([k, v]) => [statLabel(k), fmt(v), k]),
  ];
  return [
    h("h2", { class: "section-title" }, mine.length ? `Numbers · ${split}` : "Numbers"),
    h("dl", { class: "stats" }, statRows(rows)),
    h("p", { class: "hint" }, h("a", { href: "/help/metrics", target: "_blank", rel: "noopener" }, "What these numbers mean")),
  ];
}
