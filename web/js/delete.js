// Deleting a surface from the page: a button that asks first, in place (no modal to trap focus).

import { api } from "./api.js";
import { h } from "./dom.js";

/**
 * "Delete…" opens an inline confirmation group ("Delete surface" / "Keep it", Escape keeps);
 * focus goes to "Keep it" so a stray Enter never deletes. After the API's 204, `onDeleted()`
 * runs; an error (e.g. 409 while its job runs) goes to `notify` and the surface stays.
 */
export function deleteSurfaceButton(surface, { onDeleted, notify }) {
  const name = surface.label || `${surface.model} on ${surface.dataset}`;
  const boxId = `delete-confirm-${surface.id}`;
  const questionId = `${boxId}-question`;
  const open = h(
    "button",
    { type: "button", class: "button button-danger-quiet", "aria-expanded": "false", "aria-controls": boxId },
    "Delete…",
  );
  const yes = h("button", { type: "button", class: "button button-danger" }, "Delete surface");
  const no = h("button", { type: "button", class: "button" }, "Keep it");
  const box = h(
    "div",
    { id: boxId, class: "confirm", role: "group", "aria-labelledby": questionId, hidden: true },
    h("p", { id: questionId, class: "confirm-question" }, `Delete “${name}” and its file? This cannot be undone.`),
    yes,
    no,
  );

  const show = (visible) => {
    box.hidden = !visible;
    open.setAttribute("aria-expanded", String(visible));
    (visible ? no : open).focus();
  };
  open.addEventListener("click", () => show(box.hidden));
  no.addEventListener("click", () => show(false));
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") show(false);
  });
  yes.addEventListener("click", async () => {
    yes.disabled = no.disabled = open.disabled = true;
    yes.textContent = "Deleting…";
    try {
      await api.deleteSurface(surface.id);
    } catch (err) {
      // 409: its job still runs; the page's words point at the Cancel button instead of the API.
      const why =
        err.status === 409
          ? "its job is still computing it. Cancel it with the Cancel button in the progress panel, then delete."
          : err.message;
      notify(`Could not delete the surface: ${why}`);
      yes.disabled = no.disabled = open.disabled = false;
      yes.textContent = "Delete surface";
      show(false);
      return;
    }
    onDeleted();
  });
  return h("div", { class: "delete-control" }, open, box);
}
