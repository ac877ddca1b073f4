// Pieces shared by several views: preset buttons and the plot controls.

import { h, replace } from "../dom.js";
import { presets, startPreset } from "../presets.js";

/** Buttons that start a preset comparison and open it while it fills in (listed by the server). */
export function presetButtons({ notify, navigate }) {
  const box = h("div", { class: "preset-buttons", "aria-busy": "true" });
  presets().then(
    (list) => {
      box.removeAttribute("aria-busy");
      replace(box, list.map((preset) => presetButton(preset, { notify, navigate })));
    },
    (err) => {
      box.removeAttribute("aria-busy");
      replace(box, h("p", { class: "error-text" }, `Could not load the ready-made comparisons: ${err.message}`));
    },
  );
  return box;
}

function presetButton(preset, { notify, navigate }) {
  const button = h("button", { type: "button", class: "button", dataset: { preset: preset.id } }, preset.title);
  button.addEventListener("click", async () => {
    button.disabled = true;
    const text = button.textContent;
    button.textContent = "Starting…";
    try {
      const ids = await startPreset(preset);
      if (ids === null) {
        // Declined after seeing what it would queue: nothing was started.
        button.disabled = false;
        button.textContent = text;
        return;
      }
      if (ids.some((id) => !id)) throw new Error("the server did not say which surface the job fills");
      navigate(`/compare/${ids.join(",")}`);
    } catch (err) {
      notify(`Could not start “${preset.title}”: ${err.message}`);
      button.disabled = false;
      button.textContent = text;
    }
  });
  return button;
}

let groupCounter = 0;

/**
 * A labelled group of radio buttons drawn as a segmented control (arrow keys move inside it,
 * as for any radio group). options: [[value, label]]. Calls onChange(value).
 */
export function segmented(legend, options, value, onChange) {
  const name = `seg-${++groupCounter}`;
  const fieldset = h("fieldset", { class: "segmented" }, h("legend", {}, legend));
  const row = h("div", { class: "segmented-options" });
  for (const [optionValue, label] of options) {
    const id = `${name}-${optionValue}`;
    const input = h("input", { type: "radio", name, id, value: optionValue, checked: optionValue === value });
    input.addEventListener("change", () => input.checked && onChange(optionValue));
    row.append(input, h("label", { for: id }, label));
  }
  fieldset.append(row);
  fieldset.setValue = (v) => {
    for (const input of row.querySelectorAll("input")) input.checked = input.value === v;
  };
  return fieldset;
}

/** Splits ("train", "test") and kinds ("loss", "acc") present in a surface's metrics. */
export function metricChoices(metrics) {
  const splits = [...new Set(metrics.map((m) => m.split("_")[0]))];
  const kinds = [...new Set(metrics.map((m) => m.split("_")[1]))];
  return { splits, kinds };
}

/**
 * The plot controls: view (3D/contour/heatmap, and error for estimates; hidden for 1D), split, metric, log scale and a
 * colour range. `state` is mutated; onChange() is called after each change.
 */
export function plotControls(state, { splits, kinds, ndim, onChange, error = false }) {
  const groups = [];
  if (ndim !== 1) {
    // error: an estimated surface's standard errors per point (web/js/estimate.js)
    const views = [["surface", "3D surface"], ["contour", "Contour"], ["heatmap", "Heatmap"], ...(error ? [["error", "Error"]] : [])];
    groups.push(
      segmented("View", views, state.view, (v) => {
        state.view = v;
        onChange();
      }),
    );
  }
  if (splits.length > 1) {
    groups.push(
      segmented("Data", splits.map((s) => [s, s === "train" ? "Train" : "Test"]), state.split, (v) => {
        state.split = v;
        onChange();
      }),
    );
  }
  groups.push(
    segmented("Metric", kinds.map((k) => [k, k === "acc" ? "Accuracy" : "Loss"]), state.kind, (v) => {
      state.kind = v;
      onChange();
    }),
  );

  const logBox = h("input", { type: "checkbox", id: `log-${++groupCounter}`, checked: state.log });
  logBox.addEventListener("change", () => {
    state.log = logBox.checked;
    onChange();
  });
  groups.push(h("div", { class: "control" }, h("label", { class: "check", for: logBox.id }, logBox, " Log scale")));

  const minInput = h("input", { type: "number", step: "any", id: `cmin-${groupCounter}`, inputmode: "decimal", placeholder: "auto" });
  const maxInput = h("input", { type: "number", step: "any", id: `cmax-${groupCounter}`, inputmode: "decimal", placeholder: "auto" });
  const parse = (input) => (input.value.trim() === "" || !Number.isFinite(Number(input.value)) ? null : Number(input.value));
  const applyRange = () => {
    state.range = [parse(minInput), parse(maxInput)];
    onChange();
  };
  minInput.addEventListener("change", applyRange);
  maxInput.addEventListener("change", applyRange);
  const reset = h("button", { type: "button", class: "button button-quiet" }, "Auto");
  reset.addEventListener("click", () => {
    minInput.value = "";
    maxInput.value = "";
    applyRange();
  });
  groups.push(
    h(
      "fieldset",
      { class: "range-control" },
      h("legend", {}, ndim === 1 ? "Value range" : "Colour range"),
      h("div", { class: "range-inputs" },
        h("label", { for: minInput.id, class: "visually-hidden" }, "Minimum"), minInput,
        h("span", { "aria-hidden": "true" }, "to"),
        h("label", { for: maxInput.id, class: "visually-hidden" }, "Maximum"), maxInput,
        reset),
    ),
  );
  const controls = h("div", { class: "controls", role: "group", "aria-label": "Plot options" }, groups);
  // The scale chosen automatically (log for losses spanning decades) shows in the box.
  controls.setLog = (log) => {
    logBox.checked = log;
  };
  return controls;
}
