// The "Sharpness" panel: λmax of the training loss at each snapshot of the surface's training
// run, the 2/η line where the run took constant steps η (Cohen et al. 2021: full-batch gradient
// descent sharpens until λmax ≈ 2/η, the edge of stability), and the loss on a second, log axis.
// Without a stored measurement, a button POSTs /api/surfaces/{id}/sharpness and follows the job.

import { api } from "./api.js";
import { fmt, h, replace } from "./dom.js";
import { ACTIVE, progressPanel, watchJob } from "./jobs.js";
import { PLOT_CONFIG } from "/vendor/figure.js";
import { cssVar, loadPlotly } from "./plots.js";

/** The traces of a stored measurement: λmax, 2/η (where every point knows η) and the loss. */
export function sharpnessTraces(points) {
  const steps = points.map((p, i) => p.step ?? i);
  const traces = [
    { type: "scatter", mode: "lines+markers", name: "λmax", x: steps, y: points.map((p) => p.lambda_max), text: points.map((p) => p.snapshot), hovertemplate: "%{text}<br>step %{x}<br>λmax %{y:.4g}<extra></extra>", line: { color: "#3563e9" } },
  ];
  if (points.length && points.every((p) => typeof p.lr === "number" && p.lr > 0)) {
    traces.push({ type: "scatter", mode: "lines", name: "2/η", x: steps, y: points.map((p) => 2 / p.lr), line: { color: cssVar("--text", "#1d2433"), dash: "dash" }, hovertemplate: "2/η = %{y:.4g}<extra></extra>" });
  }
  traces.push({ type: "scatter", mode: "lines+markers", name: "training loss", x: steps, y: points.map((p) => p.loss), yaxis: "y2", line: { color: "#d9480f" }, marker: { size: 5 }, hovertemplate: "step %{x}<br>loss %{y:.3g}<extra></extra>" });
  return traces;
}

/** The loss axis: log, over whole decades (a span inside one decade got minor-tick digits
 * for labels), and the step axis: whole steps when there are few. */
export function sharpnessAxes(points) {
  const losses = points.map((p) => p.loss).filter((v) => typeof v === "number" && v > 0);
  const low = Math.floor(Math.log10(Math.min(...losses)));
  const high = Math.max(low + 1, Math.ceil(Math.log10(Math.max(...losses))));
  const steps = points.map((p, i) => p.step ?? i);
  const span = Math.max(...steps) - Math.min(...steps);
  return {
    x: span <= 10 ? { dtick: 1, tickformat: "d" } : { tickformat: "d" },
    y2: losses.length ? { range: [low, high], dtick: 1 } : {},
  };
}

/** One measured snapshot in words: a chart of one dot says less than the number. */
function oneSnapshot(point, stored) {
  const where = point.snapshot === stored.checkpoint ? "the trained weights" : `step ${point.step}`;
  const edge = typeof point.lr === "number" ? ` against 2/η = ${fmt(2 / point.lr, 4)}` : "";
  const loss = typeof point.loss === "number" ? `, training loss ${fmt(point.loss, 4)} (${stored.loss ?? "?"})` : "";
  return `One snapshot, ${where}: λmax ${fmt(point.lambda_max, 4)}${edge}${loss}. This training kept no per-epoch snapshots, so there is no curve to draw (a surface with PCA directions keeps one per epoch).`;
}

/** The panel for one surface; `panel.update(surface)` once it exists, `panel.stop()` on leaving. */
export function sharpnessPanel(id, { notify }) {
  const plot = h("div", { class: "plot plot-sharpness", role: "figure", "aria-label": "Top Hessian eigenvalue per training step, with 2/η and the loss", hidden: true });
  const summary = h("p", { class: "sharpness-summary", "aria-live": "polite" });
  const button = h("button", { type: "button", class: "button", "data-sharpness-compute": id }, "Compute sharpness");
  const slot = h("div", { class: "sharpness-progress" });
  const panel = h(
    "section",
    { class: "sharpness-panel", "aria-labelledby": "sharpness-title" },
    h("h2", { class: "section-title", id: "sharpness-title" }, "Sharpness"),
    h("p", { class: "hint" }, "λmax of the full-batch training loss at each snapshot of the training run (the checkpoint alone when it kept none). Under full-batch gradient descent with step η, λmax rises to about 2/η and stays there: the edge of stability."),
    plot,
    summary,
    h("div", { class: "sharpness-row" }, button, slot),
  );
  let stopped = false;
  let asked = false;
  const stops = [];

  const draw = async (stored) => {
    button.hidden = true;
    const points = stored.points.filter((p) => typeof p.lambda_max === "number");
    const last = points.at(-1);
    const edge = last && typeof last.lr === "number" ? 2 / last.lr : null;
    if (points.length < 2) {
      plot.hidden = true;
      summary.textContent = last ? oneSnapshot(last, stored) : "No λmax was measured.";
      return;
    }
    summary.textContent = `${points.length} snapshots; last λmax ${fmt(last.lambda_max, 4)}${edge ? ` against 2/η = ${fmt(edge, 4)} (${fmt((100 * last.lambda_max) / edge, 3)} %)` : ""}, loss ${stored.loss ?? "?"}.`;
    plot.hidden = false;
    const grid = cssVar("--plot-grid", "#d8dde6");
    const axes = sharpnessAxes(points);
    const layout = {
      height: 340,
      margin: { l: 70, r: 70, t: 10, b: 50 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: cssVar("--text", "#1d2433") },
      xaxis: { title: { text: "step (gd) or epoch" }, gridcolor: grid, ...axes.x },
      yaxis: { title: { text: "λmax" }, rangemode: "tozero", gridcolor: grid },
      yaxis2: { title: { text: "training loss" }, overlaying: "y", side: "right", type: "log", exponentformat: "power", showgrid: false, ...axes.y2 },
      legend: { orientation: "h", y: -0.25 },
    };
    try {
      const Plotly = await loadPlotly();
      if (stopped) return;
      const traces = sharpnessTraces(points);
      await Plotly.react(plot, traces, layout, PLOT_CONFIG);
      plot.dataset.ready = "true";
      plot.dataset.traces = String(traces.length);
    } catch (err) {
      notify(err.message);
    }
  };

  const load = async () => {
    try {
      await draw(await api.sharpness(id));
    } catch (err) {
      if (err.status !== 404) notify(err.message);
    }
  };

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const reply = await api.createSharpness(id, {});
      if (reply.sharpness) return draw(reply.sharpness);
      const progress = progressPanel({ label: "Sharpness", unit: "snapshots", computing: "Measuring λmax" });
      replace(slot, progress);
      progress.update(reply.job);
      if (!ACTIVE.has(reply.job.status)) return;
      stops.push(
        watchJob(reply.job.id, {
          onUpdate: (update) => progress.update(update),
          onEnd: async (end) => {
            if (end.status === "done") await load();
            else button.disabled = false;
          },
        }),
      );
    } catch (err) {
      notify(err.message);
      button.disabled = false;
    }
  });

  panel.update = (surface) => {
    const complete = surface.status === "complete";
    button.disabled = !complete;
    button.title = complete ? "" : "Available once the surface is complete.";
    if (!asked && surface.sharpness) {
      asked = true;
      load();
    }
  };
  panel.stop = () => {
    stopped = true;
    for (const stop of stops) stop();
    if (window.Plotly && !plot.hidden) window.Plotly.purge(plot);
  };
  return panel;
}
