// Small DOM and formatting helpers shared by the views.

/**
 * Create an element: h("a", {href: "#/", class: "x"}, "text", child).
 * Attributes starting with "on" become listeners; `false`/`null` attributes are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A number in a short human form: 0.0123 → "0.0123", 12345 → "1.23e+4". */
export function fmt(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e4 || abs < 1e-3) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

/** Seconds as "12 s", "3 min 4 s", "1 h 2 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** "21×21 on [-1, 1]²" or "51 points on [-1, 1]". */
export function fmtGrid(grid, ndim) {
  if (!grid) return "";
  const range = (r) => (r ? `[${r[0]}, ${r[1]}]` : "");
  if (ndim === 1 || grid.ny === null || grid.ny === undefined) {
    return `${grid.nx} points on ${range(grid.xrange)}`;
  }
  if (ndim === 3 && grid.nz) return `${grid.nx}×${grid.ny}×${grid.nz} on ${range(grid.xrange)}×${range(grid.yrange)}×${range(grid.zrange)}`;
  const sameRange = JSON.stringify(grid.xrange) === JSON.stringify(grid.yrange);
  return sameRange
    ? `${grid.nx}×${grid.ny} on ${range(grid.xrange)}²`
    : `${grid.nx}×${grid.ny} on ${range(grid.xrange)}×${range(grid.yrange)}`;
}

export { metricLabel } from "/vendor/figure.js";

/** Readable stat name: "train_loss_min" → "train loss min". */
export function statLabel(name) {
  return name.replace(/_acc\b/, " accuracy").replaceAll("_", " ");
}

/** Create a throttled caller: runs at most once per `ms`, and once more after the last call. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let pending = false;
  const run = () => {
    last = Date.now();
    pending = false;
    timer = null;
    fn();
  };
  const call = () => {
    pending = true;
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(run, wait);
  };
  call.flush = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (pending) run();
  };
  call.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    pending = false;
  };
  return call;
}

/** Status badge for a surface or job status. */
export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status);
}

/** Mark the form control named `name` invalid and show `message` in its `<id>-error` slot,
 * linked through aria-describedby so screen readers read it; the control, or null. */
export function markFieldError(form, name, message) {
  const input = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
  if (!input) return null;
  input.setAttribute("aria-invalid", "true");
  const slot = document.getElementById(`${input.id}-error`);
  if (slot) {
    slot.hidden = false;
    slot.textContent = message;
    const described = new Set((input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
    described.add(slot.id);
    input.setAttribute("aria-describedby", [...described].join(" "));
  }
  return input;
}
