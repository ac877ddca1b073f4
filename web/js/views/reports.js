// #/reports — skip-vs-plain reproduction reports: each opens as one offline HTML page; a
// button starts the documented recipe with the server's defaults (docs/reproduce.md).

import { api, links, request } from "../api.js";
import { badge, fmtDuration, h, replace } from "../dom.js";
import { ACTIVE, progressPanel, watchJob } from "../jobs.js";
import { confirmPlan } from "../presets.js";

const FAMILIES = [
  ["resnet", "ResNet shortcuts (resnet20/56 vs -noshort)"],
  ["highway", "Highway gates (highway-10/50 vs -noshort)"],
  ["transformer", "Transformer residual stream (transformer-6/18 vs -noresidual)"],
  ["recurrent", "Gates through time (lstm, gru vs rnn)"],
];

export async function render(root, _match, { notify }) {
  const list = h("div", { class: "report-list", "aria-live": "polite" }, h("p", { class: "hint" }, "Loading…"));
  const start = h("button", { type: "button", class: "button button-primary", id: "start-report" }, "Start the skip-vs-plain report");
  // the families of `landscape reproduce --family` (docs/reproduce.md), each an identity path on trial
  const family = h("select", { id: "report-family", "aria-label": "Identity path on trial" },
    FAMILIES.map(([value, label]) => h("option", { value }, label)));
  const quick = h("input", { type: "checkbox", id: "report-quick" });
  const quickLabel = h("label", { for: "report-quick" }, quick, " quick recipe");
  const stops = [];
  let stopped = false;

  replace(
    root,
    h("div", { class: "view-header" },
      h("div", {},
        h("h1", { tabindex: "-1" }, "Reports"),
        h("p", { class: "lead" }, "The residual-learning story measured: nets trained with and without their identity path (ResNet shortcuts by default; highway gates, the Transformer's residual stream, LSTM and GRU gates through time) under one fixed recipe, with their degradation table, loss surfaces, curvature, Hessian spectra and gradient flow, in one page that opens offline.")),
      h("div", { class: "header-actions" }, family, quickLabel, start)),
    list,
  );

  const show = async () => {
    let reports;
    try {
      reports = await api.reports();
    } catch (err) {
      notify(err.message);
      return;
    }
    if (stopped) return;
    for (const stop of stops.splice(0)) stop();
    if (!reports.length) {
      replace(list, h("p", { class: "hint" }, "No report yet. Start one: it trains and measures every net, which takes a while on a CPU."));
      return;
    }
    replace(list, h("ul", { class: "reports" }, reports.map(item)));
  };

  const item = (report) => {
    const recipe = report.recipe || {};
    const pairs = (recipe.pairs || []).map(([skip, plain]) => `${skip} / ${plain}`).join(", ");
    const facts = `${pairs} · ${recipe.data?.name || "?"} · ${recipe.epochs} epochs · seeds ${(recipe.seeds || []).join(", ")}`;
    const slot = h("div", { class: "report-progress" });
    const open = report.status === "done"
      ? h("a", { class: "button", href: links.reportHtml(report.id), target: "_blank", rel: "noopener", "data-report-link": report.id }, "Open the report")
      : null;
    const job = report.job;
    if (report.status !== "done" && job) {
      const progress = progressPanel({ label: "Reproducing", unit: "steps", computing: "Training and measuring" });
      progress.update(job);
      replace(slot, progress);
      if (ACTIVE.has(job.status)) {
        stops.push(
          watchJob(job.id, {
            onUpdate: (update) => progress.update(update),
            onEnd: () => show(),
          }),
        );
      }
    }
    const took = report.wall_time_s ? ` · took ${fmtDuration(report.wall_time_s)}` : "";
    return h("li", { class: "report", "data-report": report.id },
      h("p", {}, badge(report.status === "done" ? "complete" : job?.status || "queued"), " ", facts, took),
      open,
      slot);
  };

  // Hours of CPU deserve a question first: what it would queue, where in the queue, how long.
  const confirmed = async (body) => {
    const plan = await request("POST", "/api/jobs/estimate", { body: { reports: [body] } });
    const [planned] = plan.jobs;
    if (planned.action !== "new" && planned.action !== "resume") return true; // done or running
    const title = family.options[family.selectedIndex].textContent;
    const resume = await confirmPlan(`the ${title}${body.quick ? " (quick)" : ""} report`, plan);
    return resume !== null && (planned.action === "new" || resume.has(planned.id));
  };

  start.addEventListener("click", async () => {
    start.disabled = true;
    try {
      const body = { family: family.value, quick: quick.checked }; // the server's recipe for it
      if (!(await confirmed(body))) return;
      await api.createReport(body);
      await show();
    } catch (err) {
      notify(err.message);
    } finally {
      start.disabled = false;
    }
  });

  await show();
  return () => {
    stopped = true;
    for (const stop of stops) stop();
  };
}
