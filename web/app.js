// Entry point: hash router, settings (API token), page-level notices.

import { getToken, setToken } from "./js/api.js";
import { h, replace } from "./js/dom.js";

// Views are loaded on first visit, so the gallery paints without the others' code.
const ROUTES = [
  { pattern: /^\/?$/, load: () => import("./js/views/gallery.js"), nav: "gallery" },
  { pattern: /^\/surfaces\/([^/]+)$/, load: () => import("./js/views/surface.js"), nav: "gallery" },
  { pattern: /^\/compare\/?(.*)$/, load: () => import("./js/views/compare.js"), nav: "compare" },
  { pattern: /^\/new$/, load: () => import("./js/views/request.js"), nav: "new" },
  { pattern: /^\/reports\/?$/, load: () => import("./js/views/reports.js"), nav: "reports" },
];

const main = document.getElementById("main");
const notice = document.getElementById("notice");
let cleanup = null;
let generation = 0;

/** Show a message for the whole page (errors in plain words); cleared on navigation. */
export function notify(message, kind = "error") {
  if (!message) {
    notice.hidden = true;
    replace(notice);
    return;
  }
  notice.hidden = false;
  notice.className = `notice notice-${kind}`;
  replace(
    notice,
    h("p", {}, message),
    h("button", { type: "button", class: "notice-close", "aria-label": "Dismiss", onclick: () => notify(null) }, "×"),
  );
}

function currentPath() {
  const hash = decodeURIComponent(window.location.hash.replace(/^#/, ""));
  return hash || "/";
}

// A notice for the next view (navigate's `notice`): shown once that view's route starts.
let pendingNotice = null;

async function route() {
  const mine = ++generation;
  const path = currentPath();
  notify(pendingNotice, "info");
  pendingNotice = null;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A view's cleanup must never stop the next view from showing.
    }
    cleanup = null;
  }
  let match = null;
  let entry = null;
  for (const candidate of ROUTES) {
    match = path.match(candidate.pattern);
    if (match) {
      entry = candidate;
      break;
    }
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (entry && link.dataset.nav === entry.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!entry) {
    replace(
      main,
      h("h1", { tabindex: "-1" }, "Page not found"),
      h("p", {}, `There is no page at “#${path}”. `, h("a", { href: "#/" }, "Back to the gallery"), "."),
    );
    focusHeading();
    return;
  }
  main.setAttribute("aria-busy", "true");
  try {
    const view = await entry.load();
    if (mine !== generation) return;
    const root = h("div", { class: "view" });
    replace(main, root);
    window.scrollTo(0, 0);
    cleanup = (await view.render(root, match.slice(1), { notify, navigate })) || null;
    if (mine !== generation && cleanup) cleanup();
  } catch (err) {
    if (mine !== generation) return;
    replace(
      main,
      h("h1", { tabindex: "-1" }, "Something went wrong"),
      h("p", { class: "error-text" }, err?.message || String(err)),
      h("p", {}, h("a", { href: "#/" }, "Back to the gallery")),
    );
  } finally {
    if (mine === generation) main.removeAttribute("aria-busy");
  }
  if (mine === generation) focusHeading();
}

/** Move focus to the new view's heading so keyboard and screen-reader users land there. */
function focusHeading() {
  const heading = main.querySelector("h1");
  if (!heading) return;
  heading.setAttribute("tabindex", "-1");
  heading.focus({ preventScroll: true });
  document.title = `${heading.textContent} · landscape`;
}

/** Open `path`; `notice` (plain words) is shown on the page it opens. */
export function navigate(path, { notice = null } = {}) {
  pendingNotice = notice;
  const target = `#${path}`;
  if (window.location.hash === target) route();
  else window.location.hash = target;
}

function setupSettings() {
  const toggle = document.getElementById("settings-toggle");
  const panel = document.getElementById("settings");
  const form = document.getElementById("settings-form");
  const input = document.getElementById("token-input");
  const saved = document.getElementById("settings-saved");
  input.value = getToken();
  toggle.addEventListener("click", () => {
    const open = panel.hidden;
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) input.focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    saved.textContent = input.value.trim() ? "Token saved in this browser." : "Token cleared.";
  });
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      panel.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
  });
}

window.addEventListener("hashchange", route);
// Plot colours come from CSS variables: redraw the view when the system theme flips.
window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", () => route());
window.addEventListener("unhandledrejection", (event) => {
  const message = event.reason?.message || String(event.reason);
  notify(`Unexpected error: ${message}`);
});
setupSettings();
route();
