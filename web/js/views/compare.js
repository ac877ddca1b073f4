// #/compare/{id},{id}[,...] — surfaces side by side: linked cameras, one shared z range.

import { api } from "../api.js";
import { badge, fmt, fmtGrid, h, replace, statLabel } from "../dom.js";
import { estimateWords, isEstimate } from "../estimate.js";
import { provenancePanel, statRows } from "../provenance.js";
import { gradientFlowPanel } from "../flow.js";
import { followSurface } from "../follow.js";
import { progressPanel, waitingWords } from "../jobs.js";
import { draw, hasWebGL, linkViews, purge, scaleFor } from "../plots.js";
import { previewLabel, previewSurface } from "../partial.js";
import { linkSliders, volumeView } from "../volume.js";
import { metricChoices, plotControls, presetButtons } from "./shared.js";

export async function render(root, [rawIds], ctx) {
  const ids = [...new Set((rawIds || "").split(",").map((s) => s.trim()).filter(Boolean))];
  if (ids.length < 2) return renderPicker(root, ids, ctx);
  return renderComparison(root, ids, ctx);
}

function renderComparison(root, ids, { notify, navigate }) {
  const state = { view: hasWebGL() ? "surface" : "contour", split: "train", kind: "loss", log: null, range: [null, null], link: true, shared: true };
  const reopen = () => navigate(`/compare/${ids.join(",")}`);
  const panels = ids.map((id) => makePanel(id, reopen));
  const controlsBox = h("div", { class: "controls-slot" });
  let controlsBuilt = false;
  let controls = null;
  let unlink = () => {};
  let linkedCount = 0;

  const flow = gradientFlowPanel([], { notify });
  const heading = h("h1", {}, `Compare ${ids.length} surfaces`);
  replace(
    root,
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Gallery"), " / ", h("span", { "aria-current": "page" }, "Compare")),
    h("div", { class: "view-header" }, h("div", {}, heading, h("p", { class: "lead" }, "Rotate or zoom one plot and the others follow; all share one colour and z range."))),
    controlsBox,
    h("div", { class: `compare-grid compare-${Math.min(ids.length, 3)}` }, panels.map((p) => p.el)),
    flow,
  );
  // One plot over depth for all the compared nets (e.g. plain vs skip of one depth).
  const updateFlow = () =>
    flow.update(
      panels
        .filter((p) => p.surface)
        .map((p) => ({ id: p.id, label: p.surface.label || p.surface.model, complete: p.surface.status === "complete", stored: Boolean(p.surface.gradient_flow) })),
    );

  const metricName = () => `${state.split}_${state.kind}`;

  /** One scale for all (log when any spans decades; one range when shared), or per panel. */
  const scales = () => {
    const metric = metricName();
    const all = scaleFor(panels.map((p) => p.surface), metric, { log: state.log, range: state.range });
    controls?.setLog(all.log);
    return (p) => (state.shared ? all : scaleFor([p.surface], metric, { log: all.log, range: state.range }));
  };

  const relink = () => {
    const ready = panels.filter((p) => p.drawn).map((p) => p.plot);
    if (ready.length === linkedCount) return;
    unlink();
    linkedCount = ready.length;
    unlink = state.link && ready.length > 1 ? linkViews(ready) : () => {};
  };

  const redrawAll = async () => {
    const scaleOf = scales();
    const metric = metricName();
    await Promise.all(
      panels
        .filter((p) => p.surface)
        .map(async (p) => {
          const metrics = p.surface.metrics || [];
          if (!metrics.includes(metric)) {
            p.note.textContent = `This surface has no ${metric.replace("_", " ")} values.`;
            return;
          }
          p.note.textContent = "";
          try {
            if (p.surface.ndim === 3) {
              await drawVolume(p, { metric, view: state.view, scale: scaleOf(p), compact: ids.length > 1 });
              return;
            }
            const shown = previewSurface(p.surface);
            p.flag.textContent = shown.preview ? ` · ${previewLabel(shown.preview, metric)}` : "";
            await draw(p.plot, shown, { metric, view: state.view, scale: scaleOf(p), compact: ids.length > 1 });
            p.drawn = true;
            p.plot.dataset.ready = "true";
          } catch (err) {
            notify(err.message);
          }
        }),
    );
    relink();
  };

  // Volumes: each panel an isosurface and a z slice; one slider drives them all.
  const drawVolume = async (p, options) => {
    if (!p.volume) {
      p.volume = volumeView(p.surface.label || p.id);
      p.plot.hidden = true;
      p.plot.after(p.volume.element);
      const volumes = panels.filter((q) => q.volume).map((q) => q.volume);
      if (volumes.length === panels.length) linkSliders(volumes);
    }
    await p.volume.update(p.surface, options);
  };

  const buildControls = (surface) => {
    controlsBuilt = true;
    const { splits, kinds } = metricChoices(surface.metrics || []);
    state.split = splits[0] || "train";
    state.kind = kinds.includes("loss") ? "loss" : kinds[0] || "loss";
    const linkBox = h("input", { type: "checkbox", id: "link-views", checked: state.link });
    linkBox.addEventListener("change", () => {
      state.link = linkBox.checked;
      linkedCount = -1;
      relink();
    });
    const sharedBox = h("input", { type: "checkbox", id: "shared-range", checked: state.shared });
    sharedBox.addEventListener("change", () => {
      state.shared = sharedBox.checked;
      redrawAll();
    });
    controls = plotControls(state, { splits, kinds, ndim: surface.ndim, onChange: redrawAll });
    controls.append(
      h("div", { class: "control" }, h("label", { class: "check", for: "link-views" }, linkBox, " Link views")),
      h("div", { class: "control" }, h("label", { class: "check", for: "shared-range" }, sharedBox, " Shared z range")),
    );
    replace(controlsBox, controls);
  };

  const stops = panels.map((p) =>
    followSurface(p.id, {
      onChange: ({ surface, job, record }) => {
        p.showRecord(record);
        if (job) p.showJob(job);
        if (!surface || surface === p.surface) return;
        p.show(surface);
        if (!controlsBuilt) buildControls(surface);
        redrawAll();
        updateFlow();
      },
      onMissing: () => p.missing(),
      onError: (err) => notify(err.message),
    }),
  );

  return () => {
    for (const stop of stops) stop();
    unlink();
    flow.stop();
    for (const p of panels) {
      p.volume?.destroy();
      purge(p.plot);
    }
  };
}

function makePanel(id, onResume) {
  const title = h("h2", { class: "panel-title" }, h("a", { href: `#/surfaces/${encodeURIComponent(id)}` }, id));
  const meta = h("p", { class: "meta" }, "Loading…");
  const progressSlot = h("div", { class: "progress-slot" });
  const plot = h("div", { class: "plot plot-compare", role: "figure", "aria-label": `Surface ${id}`, dataset: { surfaceId: id, placeholder: "The plot appears with the first computed points." } });
  const note = h("p", { class: "hint", "aria-live": "polite" });
  const flag = h("span", { class: "preview-flag-inline", "aria-live": "polite" }); // in the header, above the plot
  const numbers = h("div", { class: "panel-numbers" });
  const about = h("div", { class: "about-slot" });
  // Seven parts: each takes one of the seven grid rows a panel shares with its row neighbours
  // (.compare-grid > .panel in style.css), so the plots of a row start level.
  const el = h("section", { class: "panel", "aria-labelledby": `panel-${id}` }, title, meta, progressSlot, plot, note, numbers, about);
  let record = null;
  title.id = `panel-${id}`;
  let progress = null;
  const panel = {
    id,
    el,
    plot,
    note,
    flag,
    surface: null,
    drawn: false,
    show(surface) {
      panel.surface = surface;
      const name = surface.label || `${surface.model} on ${surface.dataset}`;
      replace(title, h("a", { href: `#/surfaces/${encodeURIComponent(id)}` }, name));
      plot.setAttribute("aria-label", `Surface plot: ${name}`);
      replace(
        meta,
        `${surface.model} · ${surface.dataset} · ${fmtGrid(surface.grid, surface.ndim)} · `,
        badge(surface.status),
        // a comparison with an estimate says so on that panel
        isEstimate(surface) ? h("span", { class: "estimate-note", dataset: { role: "estimate" } }, ` · ${estimateWords(surface, "train")}`) : "",
        flag,
      );
      replace(numbers, compareNumbers(surface));
      replace(about, provenancePanel(surface, record));
    },
    showRecord(job) {
      record = job;
      if (panel.surface) replace(about, provenancePanel(panel.surface, record));
    },
    showJob(job) {
      if (!progress) {
        progress = progressPanel({ label: `Progress of ${job.label || id}`, onResume });
        replace(progressSlot, progress);
      }
      progress.update(job);
      if (!panel.surface) {
        replace(title, job.label || job.request?.model || id);
        replace(meta, waitingWords(job));
      }
    },
    missing() {
      replace(meta, "There is no surface or job with this id.");
    },
  };
  return panel;
}

// The numbers worth reading side by side, each linked to its formula.
const COMPARE_STATS = ["train_loss_center", "train_loss_min", "train_loss_max", "sharpness", "roughness", "nonconvexity", "convex_fraction"];

function compareNumbers(surface) {
  const stats = surface.stats || {};
  const rows = COMPARE_STATS.filter((k) => stats[k] !== null && stats[k] !== undefined)
    .map((k) => [statLabel(k), fmt(stats[k]), k]);
  // The plot and these numbers rest on estimates until the surface is made exact.
  if (rows.length) rows.unshift(["values", estimateWords(surface, "train")]);
  const nonconvexity = stats.nonconvexity ?? stats.train_loss_nonconvexity;
  if (stats.nonconvexity === undefined && nonconvexity !== undefined && nonconvexity !== null) {
    rows.push(["nonconvexity", fmt(nonconvexity), "train_loss_nonconvexity"]);
  }
  return rows.length ? [h("h3", { class: "section-title" }, "Numbers"), h("dl", { class: "stats" }, statRows(rows))] : null;
}

async function renderPicker(root, preselected, { notify, navigate }) {
  const chosen = new Set(preselected);
  const go = h("button", { type: "submit", class: "button button-primary", disabled: chosen.size < 2 }, "Compare");
  const list = h("fieldset", { class: "picker" }, h("legend", {}, "Surfaces"), h("p", { class: "loading" }, "Loading surfaces…"));
  const form = h("form", { class: "picker-form" }, list, h("div", { class: "form-actions" }, go));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (chosen.size >= 2) navigate(`/compare/${[...chosen].join(",")}`);
  });
  replace(
    root,
    h("div", { class: "view-header" }, h("div", {}, h("h1", {}, "Compare surfaces"), h("p", { class: "lead" }, "Pick two or more stored surfaces, or start a ready-made comparison."))),
    h("section", { class: "presets", "aria-labelledby": "presets-title" },
      h("h2", { id: "presets-title", class: "section-title" }, "Ready-made"),
      presetButtons({ notify, navigate })),
    h("h2", { class: "section-title" }, "Your surfaces"),
    form,
  );
  let surfaces = [];
  try {
    surfaces = await api.surfaces();
  } catch (err) {
    replace(list, h("legend", {}, "Surfaces"), h("p", { class: "error-text", role: "alert" }, `Could not load the surfaces: ${err.message}`));
    return null;
  }
  if (!surfaces.length) {
    replace(list, h("legend", {}, "Surfaces"), h("p", {}, "No surfaces yet: ", h("a", { href: "#/new" }, "request one"), "."));
    return null;
  }
  replace(
    list,
    h("legend", {}, "Surfaces"),
    surfaces.map((s) => {
      const box = h("input", { type: "checkbox", id: `cmp-${s.id}`, value: s.id, checked: chosen.has(s.id) });
      box.addEventListener("change", () => {
        if (box.checked) chosen.add(s.id);
        else chosen.delete(s.id);
        go.disabled = chosen.size < 2;
      });
      return h("div", { class: "picker-row" },
        h("label", { class: "check", for: box.id }, box, ` ${s.label || s.model}`),
        h("span", { class: "hint" }, ` ${s.model} · ${s.dataset} · ${fmtGrid(s.grid, s.ndim)} · ${s.status}`));
    }),
  );
  return null;
}
