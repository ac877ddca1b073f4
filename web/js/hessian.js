// The "Curvature" panel of a surface: Hessian numbers, a form to compute them, the |λmin/λmax| map
// and the eigenvalue density.
//
// The numbers are `surface.hessian` (docs/api.md); "Compute curvature" POSTs
// /api/surfaces/{id}/hessian and follows the job like a surface's. A plotted bowl can hide
// negative curvature in directions the plot cannot show: λ_min < 0 says θ is a saddle, and the
// map shows where (Li et al. 2018 §6). The density (stochastic Lanczos quadrature, as PyHessian
// computes it) shows how all the curvature is spread: a bulk near 0, outliers, a negative tail.

import { api } from "./api.js";
import { fmt, h, markFieldError, replace } from "./dom.js";
import { ACTIVE, findJob, progressPanel, watchJob } from "./jobs.js";
import { PLOT_CONFIG } from "/vendor/figure.js";
import { cssVar, loadPlotly } from "./plots.js";

const FIELDS = [
  // [name, label, default, min, max, hint]
  ["top", "Largest eigenvalues", 3, 0, 10, "λ_max and the next ones: sharpness of the minimum."],
  ["bottom", "Smallest eigenvalues", 1, 0, 10, "λ_min < 0 means a saddle, not a minimum."],
  ["curvature_grid", "Map points per axis", 0, 0, 15, "|λmin/λmax| on this many grid points per axis (0: no map). Each costs a Lanczos run."],
  ["density_probes", "Density probes", 0, 0, 20, "Eigenvalue density from this many random probes of 40 Lanczos steps (0: no density)."],
];
// The server's caps (GET /api/config) for the fields above.
const LIMITS = { top: "max_hessian_eigenvalues", bottom: "max_hessian_eigenvalues", curvature_grid: "max_curvature_grid", density_probes: "max_density_probes" };

/**
 * The panel for surface `surfaceId`. `panel.update(surface)` shows its numbers (call it with
 * every fresh copy); `onComputed()` runs when an analysis finishes, to fetch the surface again.
 * `panel.stop()` ends the job stream and frees the plot.
 */
export function curvaturePanel(surfaceId, { onComputed, notify }) {
  const numbers = h("div", { class: "curvature-numbers", "aria-live": "polite" });
  const mapPlot = h("div", { class: "plot plot-curvature", role: "figure", "aria-label": "Curvature map |λmin/λmax|", hidden: true });
  const densityPlot = h("div", { class: "plot plot-density", role: "figure", "aria-label": "Hessian eigenvalue density", hidden: true });
  const progressSlot = h("div", { class: "curvature-progress" });
  const errorBox = h("div", { class: "form-errors", role: "alert", tabindex: "-1", hidden: true });
  const inputs = Object.fromEntries(
    FIELDS.map(([name, , value, min, max]) => [name, h("input", { type: "number", id: `c-${name}`, name, value, min, max, step: 1, inputmode: "numeric" })]),
  );
  const trainSize = h("input", { type: "number", id: "c-train_size", name: "train_size", min: 1, step: 1, inputmode: "numeric", placeholder: "the surface's", "aria-describedby": "c-train_size-hint" });
  const trace = h("input", { type: "checkbox", id: "c-trace", name: "trace", checked: true });
  const traceSamples = h("input", { type: "number", id: "c-trace_samples", name: "trace_samples", value: 20, min: 1, max: 200, step: 1, inputmode: "numeric" });
  const submit = h("button", { type: "submit", class: "button button-primary" }, "Compute curvature");
  const readiness = h("p", { class: "hint", id: "c-readiness" });
  submit.setAttribute("aria-describedby", "c-readiness");

  const field = (input, label, hint) =>
    h("div", { class: "field" },
      h("label", { for: input.id }, label),
      input,
      hint ? h("p", { class: "hint", id: `${input.id}-hint` }, hint) : null,
      h("p", { class: "field-error", id: `${input.id}-error`, hidden: true }));
  for (const [name, , , , , hint] of FIELDS) if (hint) inputs[name].setAttribute("aria-describedby", `c-${name}-hint`);
  api.config().then(
    ({ limits = {} }) => {
      for (const [name, key] of Object.entries(LIMITS)) if (limits[key]) inputs[name].max = String(limits[key]);
    },
    () => {}, // the defaults above stand; the server still checks
  );

  const form = h("form", { class: "curvature-form", novalidate: true },
    h("fieldset", {},
      h("legend", {}, "Compute curvature"),
      h("div", { class: "field-row" },
        FIELDS.map(([name, label, , , , hint]) => field(inputs[name], label, hint)),
        h("div", { class: "field" },
          h("span", { class: "label" }, "Trace"),
          h("label", { class: "check" }, trace, " Estimate tr(H) (Hutchinson)"),
          h("label", { for: traceSamples.id }, "Probes"),
          traceSamples,
          h("p", { class: "field-error", id: `${traceSamples.id}-error`, hidden: true })),
        field(trainSize, "Training samples", "Optional: a fixed subset, for speed. Blank: the surface's data.")),
      errorBox,
      h("div", { class: "form-actions" }, submit),
      readiness));
  trace.addEventListener("change", () => (traceSamples.disabled = !trace.checked));

  const panel = h("section", { class: "panel curvature-panel", "aria-labelledby": "curvature-title" },
    h("h2", { class: "section-title", id: "curvature-title" }, "Curvature"),
    h("p", { class: "hint" }, "Eigenvalues of the loss Hessian at the trained weights, over the whole training subset: large λ_max is a sharp minimum, negative λ_min a saddle (Li et al. 2018 §6)."),
    numbers,
    mapPlot,
    densityPlot,
    progressSlot,
    form);

  let stopWatch = null;
  let progress = null;
  let complete = false;
  let busy = false;

  const setBusy = (value) => {
    busy = value;
    submit.disabled = busy || !complete;
    readiness.textContent = !complete ? "Available once the surface is complete." : busy ? "An analysis is running." : "";
  };

  const follow = (job) => {
    if (!progress) {
      progress = progressPanel({ label: "Computing curvature", unit: "steps", computing: "Computing curvature" });
      replace(progressSlot, progress);
    }
    progress.update(job);
    if (!ACTIVE.has(job.status)) return;
    setBusy(true);
    stopWatch?.();
    stopWatch = watchJob(job.id, {
      onUpdate: (update) => progress.update(update),
      onEnd: (end) => {
        setBusy(false);
        if (end.status === "done") onComputed?.();
      },
    });
  };

  const clearErrors = () => {
    errorBox.hidden = true;
    replace(errorBox);
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
  };
  const showError = (err) => {
    errorBox.hidden = false;
    replace(errorBox, h("p", { class: "form-errors-title" }, "Could not start:"), h("ul", {}, err.message.split("\n").map((line) => h("li", {}, line))));
    for (const { field: name, message } of err.fields || []) markFieldError(form, name, message);
    errorBox.focus();
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || !complete) return;
    clearErrors();
    const body = { trace: trace.checked };
    for (const [name, input] of [...Object.entries(inputs), ["trace_samples", traceSamples], ["train_size", trainSize]]) {
      if (input.value !== "") body[name] = Number(input.value);
    }
    setBusy(true);
    try {
      const reply = await api.createHessian(surfaceId, body);
      if (reply.job && !reply.hessian) follow(reply.job);
      else {
        setBusy(false);
        onComputed?.(); // already stored: just show it
      }
    } catch (err) {
      setBusy(false);
      if (err.status === 422) showError(err);
      else notify?.(err.message);
    }
  });

  // An analysis started earlier (another tab, a script) is followed too.
  findJob(surfaceId, "hessian").then(
    (job) => job && ACTIVE.has(job.status) && follow(job),
    () => {},
  );

  panel.update = (surface) => {
    complete = surface.status === "complete";
    setBusy(busy);
    replace(numbers, numberList(surface.hessian));
    drawMap(mapPlot, surface.hessian?.curvature, surface.ndim).catch((err) => notify?.(err.message));
    drawDensity(densityPlot, surface.hessian?.density).catch((err) => notify?.(err.message));
  };
  panel.stop = () => {
    stopWatch?.();
    for (const div of [mapPlot, densityPlot]) if (window.Plotly && !div.hidden) window.Plotly.purge(div);
  };
  setBusy(false);
  return panel;
}

function row(key, label, value) {
  return [h("dt", {}, label), h("dd", { dataset: { stat: key, value: value ?? "" } }, fmt(value))];
}

/** λ_max, λ_min, their ratio and the trace; a line saying so when nothing is stored. */
function numberList(hessian) {
  if (!hessian) return h("p", { class: "hint curvature-empty" }, "Not computed yet.");
  const rows = [];
  if (hessian.lambda_max !== null) rows.push(row("lambda_max", "λ_max", hessian.lambda_max));
  if (hessian.lambda_min !== null) rows.push(row("lambda_min", "λ_min", hessian.lambda_min));
  if (hessian.ratio !== null) rows.push(row("ratio", "|λ_min / λ_max|", hessian.ratio));
  if (hessian.trace !== null) {
    rows.push([
      h("dt", {}, "trace"),
      h("dd", { dataset: { stat: "trace", value: hessian.trace } }, `${fmt(hessian.trace)} ± ${fmt(hessian.trace_stderr)}`),
    ]);
  }
  const density = hessian.density;
  if (density) {
    rows.push([
      h("dt", {}, "negative mass"),
      h("dd", { dataset: { stat: "negative_fraction", value: density.negative_fraction ?? "" } },
        `${negativeText(density)} (density nodes ${fmt(density.node_min)} … ${fmt(density.node_max)})`),
    ]);
  }
  const more = (hessian.top_eigenvalues || []).slice(1);
  if (more.length) rows.push([h("dt", {}, "next largest"), h("dd", { dataset: { stat: "top" } }, more.map((v) => fmt(v)).join(", "))]);
  for (const [key, label, text, ok] of convergenceLines(hessian)) {
    rows.push([
      h("dt", {}, label),
      h("dd", { class: ok ? "converged" : "not-converged", dataset: { stat: key, value: String(ok) } },
        ok ? text : ["⚠ ", text]),
    ]);
  }
  const list = h("dl", { class: "stats" }, rows);
  const facts = [
    hessian.n_params ? `${hessian.n_params.toLocaleString()} parameters` : null,
    hessian.n_samples ? `${hessian.n_samples} training samples` : null,
    hessian.trace_samples ? `${hessian.trace_samples} probes` : null,
    density ? `density: ${density.probes} probes × ${density.steps} Lanczos steps, seed ${density.seed}` : null,
  ].filter(Boolean);
  // What the plotted plane can and cannot show, in the CLI's words (the API sends the sentence).
  const plane = hessian.plane_curvature;
  const sentence = plane ? h("p", { class: "plane-curvature", dataset: { stat: "plane_curvature" } }, plane.sentence) : null;
  return [list, sentence, facts.length ? h("p", { class: "hint" }, facts.join(" · ")) : null];
}

/** [key, label, text, ok] per Lanczos result that recorded its residuals: the spectrum's
 * eigenvalues and the map's points. A result that did not converge is a guess, so it says so. */
function convergenceLines(hessian) {
  const lines = [];
  const c = hessian.convergence;
  if (c) {
    const text = c.converged
      ? `converged (residual ${fmt(c.residual)} ≤ tol ${fmt(c.tolerance)})`
      : `not converged (residual ${fmt(c.residual)} > tol ${fmt(c.tolerance)}): the eigenvalues may be off`;
    lines.push(["spectrum_converged", "eigenvalues", text, c.converged]);
  }
  const m = hessian.curvature;
  if (m && m.not_converged !== null && m.not_converged !== undefined) {
    const points = (m.converged || []).flat().length;
    const largest = Math.max(...[m.residual_max, m.residual_min].flat(2).filter((v) => v !== null && v !== undefined));
    const residual = Number.isFinite(largest) ? `residual ≤ ${fmt(largest)}, ` : "";
    const text = m.not_converged === 0
      ? `all ${points} points converged (${residual}tol ${fmt(m.tol)} × each point's |λ|)`
      : `${m.not_converged} of ${points} points not converged (${residual}tol ${fmt(m.tol)} × each point's |λ|): their ratios may be off`;
    lines.push(["map_converged", "map points", text, m.not_converged === 0]);
  }
  return lines;
}

/** One small figure of the panel, or the div hidden when there is nothing to draw:
 * `figure(data)` gives the trace and the axes. */
async function drawOrHide(div, data, figure) {
  if (!data) {
    if (!div.hidden && window.Plotly) window.Plotly.purge(div);
    div.hidden = true;
    return;
  }
  div.hidden = false;
  const Plotly = await loadPlotly();
  const { trace, xaxis, yaxis } = figure(data);
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 40 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: cssVar("--text", "#1d2433") },
    xaxis,
    yaxis,
  };
  await Plotly.react(div, [trace], layout, PLOT_CONFIG);
  div.dataset.ready = "true";
}

/** The |λmin/λmax| map as a heatmap (a curve for 1D surfaces). */
function drawMap(div, curvature, ndim) {
  return drawOrHide(div, curvature, (c) => ({
    trace:
      ndim === 1 || !c.y
        ? { type: "scatter", mode: "lines+markers", x: c.x, y: c.ratio, name: "|λmin/λmax|" }
        : {
            type: "heatmap",
            x: c.x,
            y: c.y,
            z: c.ratio,
            colorscale: "Viridis",
            colorbar: { title: { text: "|λmin/λmax|" } },
            hovertemplate: "x %{x}<br>y %{y}<br>|λmin/λmax| %{z:.3g}<extra></extra>",
          },
    xaxis: { title: { text: "x" } },
    yaxis: { title: { text: ndim === 1 ? "|λmin/λmax|" : "y" } },
  }));
}

/** The SLQ eigenvalue density on a log axis (its Gaussian tails cut at 1e-6 of the peak, as
 * the offline report does). */
function drawDensity(div, density) {
  return drawOrHide(div, density, (d) => {
    const floor = Math.max(...d.density.filter((v) => v !== null)) * 1e-6;
    return {
      trace: {
        type: "scatter",
        mode: "lines",
        x: d.grid,
        y: d.density.map((v) => Math.max(v ?? 0, floor)),
        name: "density",
        hovertemplate: "λ %{x:.3g}<br>density %{y:.3g}<extra></extra>",
      },
      xaxis: { title: { text: "eigenvalue λ" } },
      yaxis: { type: "log", title: { text: "density" } },
    };
  });
}

// The share of eigenvalues below −ε (ε: the products' resolution, 1e-5 × the largest |node|):
// at least `negative_fraction`, at most `negative_fraction_max`, widened by the probes' spread.
function negativeText(density) {
  if (density.negative_fraction == null) return "not recorded (the analysis predates it)";
  const [low, high] = density.negative_interval || [null, null];
  return `${fmt(density.negative_fraction)} of eigenvalues below −${fmt(density.negative_epsilon)} (interval ${fmt(low)} … ${fmt(high)}; the rest of the upper end is mass the quadrature cannot place on either side of −ε)`;
}
