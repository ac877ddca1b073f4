// The "Gradient flow" panel: ‖∂L/∂W‖ per layer over depth (log scale), at initialization
// (dashed) and trained (solid), for one surface or several on one plot (compare page).
//
// A plain deep net's gradient decays toward the input; a residual one's does not: the
// "gradient highway" of He et al. 2016, as data (docs/api.md, gradient flow). Each surface
// without a stored profile gets a "Compute" button that POSTs /api/surfaces/{id}/gradient-flow
// and follows the job.

import { api } from "./api.js";
import { fmt, h, replace } from "./dom.js";
import { ACTIVE, progressPanel, watchJob } from "./jobs.js";
import { PLOT_CONFIG } from "/vendor/figure.js";
import { cssVar, loadPlotly } from "./plots.js";

const COLOURS = ["#3563e9", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#5c940d"];

/**
 * The panel for `surfaces` ([{id, label, complete, stored}]). `panel.stop()` ends job streams and frees the plot.
 */
export function gradientFlowPanel(surfaces, { notify }) {
  const plot = h("div", { class: "plot plot-flow", role: "figure", "aria-label": "Gradient norm per layer over depth (logarithmic axis)", hidden: true });
  const summary = h("dl", { class: "stats flow-summary", "aria-live": "polite" });
  const rows = h("div", { class: "flow-rows" });
  const panel = h(
    "section",
    { class: "flow-panel", "aria-labelledby": "flow-title" },
    h("h2", { class: "section-title", id: "flow-title" }, "Gradient flow"),
    h("p", { class: "hint" }, "‖∂L/∂W‖ of the training loss for every conv/linear layer, input (depth 1) to output, at initialization (dashed) and trained (solid). A plain deep net's gradient decays toward the input; shortcuts carry it undiminished (He et al. 2016)."),
    plot,
    summary,
    rows,
  );
  const flows = new Map(); // id → stored profile
  const stops = [];
  let stopped = false;

  const redraw = async () => {
    const shown = surfaces.filter((s) => flows.has(s.id));
    plot.hidden = shown.length === 0;
    replace(
      summary,
      shown.flatMap((s) => {
        const flow = flows.get(s.id);
        return [h("dt", {}, s.label), h("dd", {}, `input/output gradient ratio: init ${fmt(flow.init?.input_to_output_ratio, 3)}, trained ${fmt(flow.trained?.input_to_output_ratio, 3)}`)];
      }),
    );
    if (!shown.length) return;
    const traces = shown.flatMap((s, index) => {
      const flow = flows.get(s.id);
      const colour = COLOURS[surfaces.indexOf(s) % COLOURS.length];
      return [
        ["init", "dash"],
        ["trained", "solid"],
      ]
        .filter(([which]) => flow[which])
        .map(([which, dash]) => ({
          type: "scatter",
          mode: "lines+markers",
          name: `${s.label} · ${which}`,
          x: flow[which].depth,
          y: flow[which].grad_norm,
          text: flow[which].names,
          hovertemplate: "%{text}<br>depth %{x}<br>‖∂L/∂W‖ %{y:.3g}<extra></extra>",
          line: { color: colour, dash, width: which === "trained" ? 2 : 1.5 },
          marker: { size: 4 },
          legendrank: index,
        }));
    });
    const text = cssVar("--text", "#1d2433");
    const grid = cssVar("--plot-grid", "#d8dde6");
    const layout = {
      height: 360,
      margin: { l: 70, r: 20, t: 10, b: 50 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: text },
      xaxis: { title: { text: "depth (1 = input)" }, gridcolor: grid },
      yaxis: { title: { text: "‖∂L/∂W‖" }, type: "log", gridcolor: grid, exponentformat: "power" },
      legend: { orientation: "h", y: -0.25 },
    };
    try {
      const Plotly = await loadPlotly();
      if (stopped) return;
      await Plotly.react(plot, traces, layout, PLOT_CONFIG);
      plot.dataset.ready = "true";
      plot.dataset.traces = String(traces.length);
    } catch (err) {
      notify(err.message);
    }
  };

  const load = async (s) => {
    try {
      flows.set(s.id, await api.gradientFlow(s.id));
    } catch (err) {
      if (err.status !== 404) notify(err.message);
    }
  };

  const row = (s) => {
    const button = h("button", { type: "button", class: "button", "data-flow-compute": s.id }, surfaces.length > 1 ? `Compute for ${s.label}` : "Compute gradient flow");
    const slot = h("div", { class: "flow-progress" });
    const el = h("div", { class: "flow-row" }, button, slot);
    const refresh = () => {
      const has = flows.has(s.id);
      el.hidden = has;
      button.disabled = !s.complete;
      button.title = s.complete ? "" : "Available once the surface is complete.";
    };
    const follow = (job) => {
      const progress = progressPanel({ label: `Gradient flow · ${s.label}`, unit: "steps", computing: "Measuring gradients" });
      replace(slot, progress);
      progress.update(job);
      if (!ACTIVE.has(job.status)) return;
      button.disabled = true;
      stops.push(
        watchJob(job.id, {
          onUpdate: (update) => progress.update(update),
          onEnd: async (end) => {
            if (end.status === "done") await load(s);
            refresh();
            redraw();
          },
        }),
      );
    };
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const reply = await api.createGradientFlow(s.id, {});
        if (reply.gradient_flow) {
          flows.set(s.id, reply.gradient_flow);
          refresh();
          redraw();
        } else if (reply.job) follow(reply.job);
      } catch (err) {
        notify(err.message);
        refresh();
      }
    });
    return { el, refresh };
  };

  const built = new Map();
  const asked = new Set();
  /** Show (or refresh) the surfaces; `complete` flags enable the buttons. */
  panel.update = async (list) => {
    surfaces = list;
    // Fetch a stored flow once per surface (`stored`: the summary's gradient_flow flag).
    const fresh = list.filter((s) => s.stored && !asked.has(s.id));
    for (const s of fresh) asked.add(s.id);
    await Promise.all(fresh.map(load));
    if (stopped) return;
    for (const s of list) {
      if (!built.has(s.id)) {
        built.set(s.id, row(s));
        rows.append(built.get(s.id).el);
      }
      built.get(s.id).refresh();
    }
    redraw();
  };
  panel.stop = () => {
    stopped = true;
    for (const stop of stops) stop();
    if (window.Plotly && !plot.hidden) window.Plotly.purge(plot);
  };
  return panel;
}
