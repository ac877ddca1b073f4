// #/new — request a surface: zoo model or uploaded checkpoint, data, directions, grid.

import { api, isStopping, waitWords } from "../api.js";
import { h, markFieldError, replace } from "../dom.js";
import { progressPanel, watchJob } from "../jobs.js";
import { FIELD_GROUPS, checkForm, fieldName, inWords } from "../request-checks.js";
import { volumeFields } from "../volume-form.js";

// Field names are the request's JSON paths, so a 422 `loc` finds its input.
const DIRECTION_HINTS = {
  random: "Random: two Gaussian directions scaled to the weights by the normalization below (Li et al. 2018, §4); the seed picks them.",
  pca: "PCA: the model is trained with a snapshot per epoch (at least 2 epochs) and its path is drawn on the plot. PCA directions are unit vectors, so the path often spans several units: widen the grid.",
  hessian: "Hessian: the top-2 eigenvectors of the loss's Hessian at the trained weights (Lanczos), the most curved directions.",
};

function field(label, input, hint) {
  const hintId = hint ? `${input.id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: input.id }, label),
    input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    h("p", { class: "field-error", id: `${input.id}-error`, hidden: true }),
  );
}

function numberInput(id, name, value, attrs = {}) {
  return h("input", { type: "number", id, name, value, inputmode: "numeric", ...attrs });
}

function select(id, name, options, value) {
  return h(
    "select",
    { id, name },
    options.map(([v, label, disabled]) => h("option", { value: v, selected: v === value, disabled: Boolean(disabled) }, label)),
  );
}

export async function render(root, _params, { navigate, notify }) {
  const errorBox = h("div", { class: "form-errors", role: "alert", tabindex: "-1", hidden: true });
  const modelSelect = select("f-model", "model", [["", "Loading models…"]], "");
  const modelHelp = h("p", { class: "hint", id: "f-model-desc" });
  modelSelect.setAttribute("aria-describedby", "f-model-desc");
  const datasetSelect = select("f-dataset", "dataset", [["digits", "digits"]], "digits");
  // Filled from GET /api/losses: built-ins and the server's installed plugins, by name only.
  const lossSelect = select("f-loss", "loss", [["cross_entropy", "cross_entropy"]], "cross_entropy");
  const lossHelp = h("p", { class: "hint", id: "f-loss-desc" });
  lossSelect.setAttribute("aria-describedby", "f-loss-desc");
  const checkpointSelect = select("f-checkpoint", "checkpoint", [["", "No stored checkpoints"]], "");
  const fileInput = h("input", { type: "file", id: "f-file", accept: ".pt,.pth,.safetensors" });
  const uploadButton = h("button", { type: "button", class: "button" }, "Upload");
  const uploadStatus = h("p", { class: "hint", role: "status", "aria-live": "polite" });

  const sourceModel = h("input", { type: "radio", name: "source", id: "src-model", value: "model", checked: true });
  const sourceCheckpoint = h("input", { type: "radio", name: "source", id: "src-checkpoint", value: "checkpoint" });
  const epochs = numberInput("f-epochs", "train.epochs", "30", { min: 1 }); // then the server's default
  const modelFields = h("div", { class: "field-row" },
    field("Model", modelSelect),
    field("Training epochs", epochs, "The model is trained on the data set first."),
  );
  modelFields.append(modelHelp);
  const checkpointFields = h("div", { class: "field-group", hidden: true },
    field("Checkpoint", checkpointSelect),
    h("div", { class: "field" },
      h("label", { for: "f-file" }, "Or upload one (.pt state_dict, landscape checkpoint or .safetensors)"),
      h("div", { class: "inline" }, fileInput, uploadButton),
      h("p", { class: "hint" }, "A bare state_dict is loaded into the model chosen above under “Model”; it is never unpickled."),
      uploadStatus),
  );
  const syncSource = () => {
    const useCheckpoint = sourceCheckpoint.checked;
    checkpointFields.hidden = !useCheckpoint;
    epochs.disabled = useCheckpoint;
  };
  sourceModel.addEventListener("change", syncSource);
  sourceCheckpoint.addEventListener("change", syncSource);

  const normalization = select("f-norm", "directions.normalization", [["filter", "filter (Li et al. 2018)"], ["layer", "layer"], ["weight", "weight: d ⊙ θ (Li et al. code)"], ["global", "global: ‖d‖ = ‖θ‖"], ["none", "none"]], "filter");
  const ignore = select("f-ignore", "directions.ignore", [["biasbn", "biases and BN (zeroed)"], ["none", "nothing"]], "biasbn");
  const seed = numberInput("f-seed", "directions.seed", "0", { min: 0 });
  const directionKind = select("f-direction-kind", "directions.kind", [["random", "random (filter-normalized)"], ["pca", "PCA of the training trajectory"], ["hessian", "top-2 Hessian eigenvectors"]], "random");
  // PCA directions (Li et al. 2018, §7) come from per-epoch snapshots, which only a model
  // trained here has; normalization and seed do not apply to them.
  const syncDirections = () => {
    const pca = directionKind.value === "pca";
    // The hint under the select speaks of the kind chosen (it is created with the random one's).
    const hint = directionKind.parentElement?.querySelector(".hint");
    if (hint) hint.textContent = DIRECTION_HINTS[directionKind.value] || "";
    normalization.disabled = pca;
    seed.disabled = pca;
    if (pca && sourceCheckpoint.checked) {
      sourceModel.checked = true;
      syncSource();
    }
    sourceCheckpoint.disabled = pca;
  };
  directionKind.addEventListener("change", syncDirections);

  const dim = select("f-dim", "grid.dim", [["2", "2D surface"], ["1", "1D curve"], ["3", "3-D volume"]], "2");
  const nx = numberInput("f-nx", "grid.nx", "21", { min: 1 });
  const ny = numberInput("f-ny", "grid.ny", "21", { min: 1 });
  const xmin = numberInput("f-xmin", "grid.xrange.0", "-1", { step: "any", inputmode: "decimal" });
  const xmax = numberInput("f-xmax", "grid.xrange.1", "1", { step: "any", inputmode: "decimal" });
  const ymin = numberInput("f-ymin", "grid.yrange.0", "-1", { step: "any", inputmode: "decimal" });
  const ymax = numberInput("f-ymax", "grid.yrange.1", "1", { step: "any", inputmode: "decimal" });
  const yFields = h("div", { class: "field-row" }, field("Points along y", ny), field("y from", ymin), field("y to", ymax));
  const zFields = volumeFields({ field, numberInput });
  dim.addEventListener("change", () => {
    yFields.hidden = dim.value === "1";
    zFields.sync(dim.value);
  });

  const splitTrain = h("input", { type: "checkbox", id: "f-split-train", name: "splits", value: "train", checked: true });
  const splitTest = h("input", { type: "checkbox", id: "f-split-test", name: "splits", value: "test" });
  const label = h("input", { type: "text", id: "f-label", name: "label", placeholder: "e.g. ResNet-20, seed 0", autocomplete: "off" });
  // Exploration mode: every point an estimate with its stated error, exact on demand.
  const modeExplore = h("input", { type: "radio", id: "f-mode-explore", name: "mode", value: "explore" });
  const modeExact = h("input", { type: "radio", id: "f-mode-exact", name: "mode", value: "exact", checked: true });
  const modeHint = h("p", { class: "hint", id: "f-mode-hint", "aria-live": "polite" });
  let modeTouched = false;
  for (const radio of [modeExplore, modeExact]) radio.addEventListener("change", () => (modeTouched = true));
  const defaultModes = {}; // data set → [mode, reason] from GET /api/datasets
  const showDefaultMode = () => {
    const [mode, reason] = defaultModes[datasetSelect.value] || ["exact", ""];
    if (!modeTouched) (mode === "explore" ? modeExplore : modeExact).checked = true;
    modeHint.textContent = reason ? `Default for ${datasetSelect.value}: ${reason}. Explore draws every point from a shared subsample with its ±error; “Make exact” on the surface finishes it.` : "";
  };
  datasetSelect.addEventListener("change", showDefaultMode);
  const submit = h("button", { type: "submit", class: "button button-primary" }, "Compute surface");
  const progressSlot = h("div", { class: "progress-slot", "aria-live": "polite" });

  const form = h(
    "form",
    { class: "request-form", novalidate: true, "aria-labelledby": "new-title" },
    errorBox,
    h("fieldset", {}, h("legend", {}, "Model"),
      h("div", { class: "radio-row", role: "radiogroup", "aria-label": "Where the weights come from" },
        h("label", { class: "check", for: "src-model" }, sourceModel, " Train a model from the zoo"),
        h("label", { class: "check", for: "src-checkpoint" }, sourceCheckpoint, " Use a checkpoint")),
      modelFields, checkpointFields),
    h("fieldset", {}, h("legend", {}, "Data"),
      h("div", { class: "field-row" }, field("Data set", datasetSelect),
        h("div", { class: "field" }, h("label", { for: "f-loss" }, "Loss"), lossSelect, lossHelp,
          h("p", { class: "field-error", id: "f-loss-error", hidden: true })),
        h("div", { class: "field" }, h("span", { class: "label" }, "Evaluate on"),
          h("div", { class: "inline" },
            h("label", { class: "check", for: "f-split-train" }, splitTrain, " train"),
            h("label", { class: "check", for: "f-split-test" }, splitTest, " test"))))),
    h("fieldset", {}, h("legend", {}, "Directions"),
      h("div", { class: "field-row" },
        field("Directions", directionKind, DIRECTION_HINTS.random),
        field("Normalization", normalization), field("Ignore", ignore), field("Seed", seed))),
    h("fieldset", {}, h("legend", {}, "Grid"),
      h("div", { class: "field-row" }, field("Shape", dim), field("Points along x", nx), field("x from", xmin), field("x to", xmax)),
      yFields, zFields.element),
    h("fieldset", {}, h("legend", {}, "Values"),
      h("div", { class: "radio-row", role: "radiogroup", "aria-label": "Explore or exact", "aria-describedby": "f-mode-hint" },
        h("label", { class: "check", for: "f-mode-explore" }, modeExplore, " Explore (fast, ±5 %)"),
        h("label", { class: "check", for: "f-mode-exact" }, modeExact, " Exact")),
      modeHint),
    h("fieldset", {}, h("legend", {}, "Name"), h("div", { class: "field-row" }, field("Label (optional)", label, "Shown in the gallery and on comparisons."))),
    h("div", { class: "form-actions" }, submit),
    progressSlot,
  );

  replace(
    root,
    h("div", { class: "view-header" }, h("div", {}, h("h1", { id: "new-title" }, "New surface"),
      h("p", { class: "lead" }, "Train (or load) a model, draw two random filter-normalized directions and evaluate the loss on a grid around the weights."))),
    form,
  );

  let stopWatch = null;
  // The server's limits and the demo's recipe (GET /api/config): the form checks what the
  // server would and starts where the demo does.
  let limits = {};
  api.config().then(
    (config) => {
      limits = config.limits || {};
      const d = config.defaults || {};
      if (d.epochs) epochs.value = String(d.epochs);
      if (d.grid) {
        nx.value = String(d.grid.nx);
        if (d.grid.ny) ny.value = String(d.grid.ny);
        [xmin.value, xmax.value] = (d.grid.xrange || [-1, 1]).map(String);
        if (d.grid.yrange) [ymin.value, ymax.value] = d.grid.yrange.map(String);
      }
      if (limits.max_epochs) epochs.max = String(limits.max_epochs);
    },
    () => {}, // the server still checks everything
  );
  loadCatalogue({ modelSelect, modelHelp, datasetSelect, checkpointSelect, lossSelect, lossHelp, showError }).then((list) => {
    for (const d of list || []) defaultModes[d.name] = [d.default_mode || "exact", d.default_mode_reason || ""];
    showDefaultMode();
  });

  uploadButton.addEventListener("click", async () => {
    const file = fileInput.files?.[0];
    if (!file) {
      uploadStatus.textContent = "Choose a file first.";
      fileInput.focus();
      return;
    }
    const body = new FormData();
    body.append("file", file);
    if (modelSelect.value) body.append("model", modelSelect.value);
    body.append("dataset", datasetSelect.value);
    uploadButton.disabled = true;
    uploadStatus.textContent = `Uploading ${file.name}…`;
    try {
      const checkpoint = await api.uploadCheckpoint(body);
      checkpointSelect.append(h("option", { value: checkpoint.id }, checkpointLabel(checkpoint)));
      for (const option of checkpointSelect.options) option.disabled = !option.value;
      checkpointSelect.value = checkpoint.id;
      uploadStatus.textContent = `Uploaded: checkpoint ${checkpoint.id} is selected.`;
    } catch (err) {
      uploadStatus.textContent = `Upload failed: ${err.message}`;
    } finally {
      uploadButton.disabled = false;
    }
  });

  function clearErrors() {
    errorBox.hidden = true;
    replace(errorBox);
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
  }

  /** Every problem at once: listed on top (in the fields' own names) and under each field. */
  function showFieldErrors(problems) {
    const lines = problems.map((p) => `${fieldName(p.field)}: ${p.message}`);
    const marks = problems.flatMap((p) => (FIELD_GROUPS[p.field] || [p.field]).map((f) => ({ field: f, message: p.message })));
    showError([...new Set(lines)].join("\n"), marks);
  }

  function showError(message, fields = []) {
    errorBox.hidden = false;
    const lines = message.split("\n");
    replace(
      errorBox,
      h("p", { class: "form-errors-title" }, lines.length > 1 ? "Please fix these:" : "Please fix this:"),
      h("ul", {}, lines.map((line) => h("li", {}, line))),
    );
    let first = null;
    for (const { field: name, message: text } of fields) {
      const input = markFieldError(form, name, text);
      first ||= input;
    }
    errorBox.focus();
    return first;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const useCheckpoint = sourceCheckpoint.checked;
    const problems = checkForm({ useCheckpoint, checkpointSelect, epochs, nx, ny, xmin, xmax, ymin, ymax, seed, dim, zFields, directionKind, splits: [splitTrain, splitTest] }, limits);
    if (problems.length) {
      showFieldErrors(problems);
      return;
    }
    const num = (input) => (input.value.trim() === "" ? undefined : Number(input.value));
    const oneD = dim.value === "1";
    const grid = { nx: num(nx), xrange: [num(xmin), num(xmax)] };
    if (oneD) grid.ny = null;
    else Object.assign(grid, { ny: num(ny), yrange: [num(ymin), num(ymax)] });
    if (dim.value === "3") zFields.apply(grid, num);
    const spec = {
      dataset: datasetSelect.value,
      grid,
      directions:
        directionKind.value === "pca"
          ? { kind: "pca", ignore: ignore.value }
          : { kind: directionKind.value, normalization: normalization.value, ignore: ignore.value, seed: num(seed) },
      splits: [splitTrain, splitTest].filter((b) => b.checked).map((b) => b.value),
      loss: lossSelect.value,
    };
    if (useCheckpoint) spec.checkpoint = checkpointSelect.value;
    else Object.assign(spec, { model: modelSelect.value, train: { epochs: num(epochs) } });
    if (label.value.trim()) spec.label = label.value.trim();
    spec.estimate = modeExplore.checked ? { target: 0.05, kind: "relative" } : null;

    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const reply = await api.createSurface(spec, {
        // 409 while this id's cancelled job stops: the server's words, and the page retries.
        onWait: (err, attempt) => {
          notify?.(waitWords(err, attempt), "info");
          submit.textContent = "Waiting for the cancelled job to stop…";
        },
      });
      notify?.(null);
      const surfaceId = reply.surface?.id || reply.job?.surface_id;
      if (surfaceId) {
        // 200: the same request was computed before (the demo's, say): it opens, and says so.
        navigate(`/surfaces/${encodeURIComponent(surfaceId)}`, reply.surface ? { notice: alreadyComputed(reply.surface) } : {});
        return;
      }
      // The job does not name its surface yet: follow it here until it does.
      followHere(reply.job);
    } catch (err) {
      submit.disabled = false;
      submit.textContent = "Compute surface";
      notify?.(null);
      const fields = inWords(err);
      if (fields.length) showFieldErrors(fields);
      else if (isStopping(err)) showError(`${err.message}. Press “Compute surface” to try again.`);
      else showError(err.message);
    }
  });

  function followHere(job) {
    const panel = progressPanel({ label: "Computing the new surface" });
    replace(progressSlot, panel);
    panel.update(job);
    stopWatch = watchJob(job.id, {
      onUpdate: (update) => {
        panel.update(update);
        if (update.surface_id) navigate(`/surfaces/${encodeURIComponent(update.surface_id)}`);
      },
      onEnd: () => {
        submit.disabled = false;
        submit.textContent = "Compute surface";
      },
    });
  }

  return () => stopWatch?.();
}

/** Why the form opened a surface it did not compute. */
function alreadyComputed(surface) {
  const when = surface.created ? ` on ${new Date(surface.created).toLocaleString()}` : "";
  const name = surface.label || `${surface.model} on ${surface.dataset}`;
  return `Already computed: opening it. “${name}” was computed${when} from this same request (model, training, data, directions and grid), so nothing new was queued.`;
}

function checkpointLabel(c) {
  const when = c.created ? new Date(c.created).toLocaleDateString() : "";
  return `${c.model || "checkpoint"} · ${c.dataset || ""} · ${c.id.slice(0, 10)} ${when}`.trim();
}

async function loadCatalogue({ modelSelect, modelHelp, datasetSelect, checkpointSelect, lossSelect, lossHelp, showError }) {
  const [models, datasets, checkpoints, losses] = await Promise.allSettled([api.models(), api.datasets(), api.checkpoints(), api.losses()]);
  if (losses.status === "fulfilled" && losses.value?.length) {
    const list = losses.value;
    replace(lossSelect, list.map((l) => h("option", { value: l.name, selected: l.name === "cross_entropy" },
      l.source === "builtin" ? l.name : `${l.name} (${l.source})`)));
    const describe = () => {
      const formula = list.find((l) => l.name === lossSelect.value)?.formula || "";
      lossHelp.textContent = formula && `${formula} — a zoo model is trained with it too.`;
    };
    lossSelect.addEventListener("change", describe);
    describe();
  }
  if (models.status === "fulfilled") {
    const list = models.value || [];
    const preferred = list.find((m) => m.name === "resnet20") || list[0];
    replace(modelSelect, list.map((m) => h("option", { value: m.name, selected: m === preferred }, m.name)));
    const describe = () => {
      modelHelp.textContent = list.find((m) => m.name === modelSelect.value)?.description || "";
    };
    modelSelect.addEventListener("change", describe);
    describe();
  } else {
    showError(`Could not load the model list: ${models.reason.message}`);
  }
  if (datasets.status === "fulfilled") {
    const list = datasets.value || [];
    replace(
      datasetSelect,
      list.map((d) =>
        h("option", { value: d.name, selected: d.name === "digits", disabled: d.available === false },
          d.available === false ? `${d.name} (not on this server)` : `${d.name}${d.num_classes ? ` · ${d.num_classes} classes` : ""}`),
      ),
    );
  }
  if (checkpoints.status === "fulfilled" && checkpoints.value?.length) {
    replace(checkpointSelect, checkpoints.value.map((c) => h("option", { value: c.id }, checkpointLabel(c))));
  }
  return datasets.status === "fulfilled" ? datasets.value || [] : [];
}
