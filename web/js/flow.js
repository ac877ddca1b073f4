// The "Gradient flow" panel: ‖∂L/∂W‖ per layer over depth (log scale), at initialization
// (dashed) and trained (solid), for one surface or several on one plot (compare page).
//
// Whether a net's gradient fades or grows toward the input is read off the measured ratio
// (flowPhrase), never a fixed sentence: plain-56 at initialization grows 286× toward the
// input (docs/api.md, gradient flow). Each surface
// without a stored profile gets a "Compute" button that POSTs /api/surfaces/{id}/gradient-flow
// and follows the job.

import { api } from "./api.js";
import { fmt, h, replace } from "./dom.js";
import { ACTIVE, progressPanel, watchJob } from "./jobs.js";
import { PLOT_CONFIG } from "/vendor/figure.js";
import { cssVar, loadPlotly } from "./plots.js";

const FLAT_FACTOR = 2; // as landscape/report/findings.py: a ratio within [1/2, 2] reads "flat"

/** What a first/last-quarter gradient ratio says, worded from the number (findings.flow_phrase). */
export function flowPhrase(ratio) {
  if (typeof ratio !== "number" || !Number.isFinite(ratio) || ratio <= 0) return "no ratio";
  if (ratio >= FLAT_FACTOR) return `grows ${fmt(ratio, 3)}× toward the input`;
  if (ratio <= 1 / FLAT_FACTOR) return `decays ${fmt(1 / ratio, 3)}× toward the input`;
  return `flat within ${FLAT_FACTOR}× (ratio ${fmt(ratio, 2)})`;
}

const COLOURS = ["#3563e9", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#5c940d"];

/**
 * The panel for `surfaces` ([{id, label, complete, stored}]). `panel.stop()` ends job streams and frees the plot.
 */
export function gradientFlowPanel(surfaces, { notify }) {
  const plot = h("div", { class: "plot plot-flow", role: "figure", "aria-label": "Gradient norm per layer over depth (logarithmic axis)", hidden: true });
  const summary = h("dl", { class: "stats flow-summary", "aria-live": "polite" });
  const rows = h("div", { class: "flow-rows" });
  // recurrent nets: ‖∂L/∂h_t‖ per time step, the LSTM's and GRU's identity path through time
  const timePlot = h("div", { class: "plot plot-flow-time", role: "figure", "aria-label": "Gradient norm per time step (logarithmic axis)", hidden: true });
  const panel = h(
    "section",
    { class: "flow-panel", "aria-labelledby": "flow-title" },
    h("h2", { class: "section-title", id: "flow-title" }, "Gradient flow"),
    h("p", { class: "hint" }, "‖∂L/∂W‖ of the training loss for every conv/linear layer, input (depth 1) to output, at initialization (dashed) and trained (solid). Below each: the mean of the first quarter of layers over the last quarter, and what that number says."),
    plot,
    timePlot,
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
        return [h("dt", {}, s.label), h("dd", {}, `input/output gradient ratio: init ${fmt(flow.init?.input_to_output_ratio, 3)} (${flowPhrase(flow.init?.input_to_output_ratio)}), trained ${fmt(flow.trained?.input_to_output_ratio, 3)} (${flowPhrase(flow.trained?.input_to_output_ratio)})`)];
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
      await drawThroughTime(Plotly, shown, layout);
    } catch (err) {
      notify(err.message);
    }
  };

  const drawThroughTime = async (Plotly, shown, layout) => {
    const traces = shown.flatMap((s) => {
      const flow = flows.get(s.id);
      const colour = COLOURS[surfaces.indexOf(s) % COLOURS.length];
      return [["init", "dash"], ["trained", "solid"]]
        .filter(([which]) => flow[which]?.time_grad_norm)
        .map(([which, dash]) => ({
          type: "scatter",
          mode: "lines+markers",
          name: `${s.label} · ${which}`,
          x: flow[which].time_grad_norm.map((_, t) => t + 1),
          y: flow[which].time_grad_norm,
          hovertemplate: "step %{x}<br>‖∂L/∂h_t‖ %{y:.3g}<extra></extra>",
          line: { color: colour, dash },
        }));
    });
    timePlot.hidden = traces.length === 0;
    if (!traces.length) return;
    const timeLayout = {
      ...layout,
      xaxis: { ...layout.xaxis, title: { text: "time step (1 = first row read)" } },
      yaxis: { ...layout.yaxis, title: { text: "‖∂L/∂h_t‖" } },
    };
    await Plotly.react(timePlot, traces, timeLayout, PLOT_CONFIG);
    timePlot.dataset.ready = "true";
    timePlot.dataset.traces = String(traces.length);
  };

  const load = async (s) => {
    try {
      flows.set(s.id, await api.gradientFlow(s.id));
    } catch (err) {
      if (err.status !== 404) notify(err.message);
    }
  };

  const built = new Map(); // id → its row
  const row = (s) => {
    const button = h("button", { type: "button", class: "button", "data-flow-compute": s.id });
    const slot = h("div", { class: "flow-progress" });
    const el = h("div", { class: "flow-row" }, button, slot);
    let running = false;
    const refresh = () => {
      const has = flows.has(s.id);
      const mine = surfaces.find((t) => t.id === s.id) || s;
      el.hidden = has;
      // Named by its surface as soon as the panel holds several (they arrive one by one).
      button.textContent = surfaces.length > 1 ? `Compute for ${mine.label}` : "Compute gradient flow";
      button.disabled = running || !mine.complete;
      button.title = mine.complete ? "" : "Available once the surface is complete.";
      entry.pending = !has && !running && mine.complete;
    };
    const follow = (job) => {
      const progress = progressPanel({ label: `Gradient flow · ${s.label}`, unit: "steps", computing: "Measuring gradients" });
      replace(slot, progress);
      progress.update(job);
      if (!ACTIVE.has(job.status)) return;
      running = true;
      refresh();
      stops.push(
        watchJob(job.id, {
          onUpdate: (update) => progress.update(update),
          onEnd: async (end) => {
            if (end.status === "done") await load(s);
            running = false;
            refresh();
            redraw();
            refreshAll();
          },
        }),
      );
    };
    const start = async () => {
      running = true;
      refresh();
      refreshAll();
      try {
        const reply = await api.createGradientFlow(s.id, {});
        running = false;
        if (reply.gradient_flow) {
          flows.set(s.id, reply.gradient_flow);
          refresh();
          redraw();
        } else if (reply.job) follow(reply.job);
      } catch (err) {
        notify(err.message);
        running = false;
        refresh();
      }
      refreshAll();
    };
    button.addEventListener("click", start);
    const entry = { el, refresh, start, pending: false };
    return entry;
  };

  // Several surfaces (the compare page): one button starts every one still without a profile.
  const allButton = h("button", { type: "button", class: "button button-primary", "data-flow-compute-all": "", hidden: true });
  allButton.addEventListener("click", () => {
    for (const r of built.values()) if (r.pending) r.start();
  });
  const refreshAll = () => {
    const pending = [...built.values()].filter((r) => r.pending).length;
    allButton.hidden = surfaces.length < 2 || pending < 2;
    allButton.textContent = pending === surfaces.length ? `Compute gradient flow for all ${pending} surfaces` : `Compute gradient flow for the ${pending} surfaces without one`;
  };
  rows.append(allButton);

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
    refreshAll();
    redraw();
  };
  panel.stop = () => {
    stopped = true;
    for (const stop of stops) stop();
    if (window.Plotly && !plot.hidden) window.Plotly.purge(plot);
    if (window.Plotly && !timePlot.hidden) window.Plotly.purge(timePlot);
  };
  return panel;
}
