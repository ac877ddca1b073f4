// The request form's 3-D volume fields (#/new): points along z and the z range, sent as the
// API's grid.dim 3, grid.nz and grid.zrange (docs/api.md). Kept apart from the form so that
// the 1D and 2D paths read as they did.

import { h } from "./dom.js";

/**
 * The z row of the grid fieldset. `field` and `numberInput` are the form's own builders (same
 * labels, hints and error slots). Returns `element`, `sync(dim)` (show the row for "3"),
 * `apply(grid, num)` (the request's z fields) and `check(whole, range, minAxis)` (the form's
 * checks, the same as the server's; returns nz, or null when it is not valid).
 */
export function volumeFields({ field, numberInput }) {
  const nz = numberInput("f-nz", "grid.nz", "11", { min: 1 });
  const zmin = numberInput("f-zmin", "grid.zrange.0", "-1", { step: "any", inputmode: "decimal" });
  const zmax = numberInput("f-zmax", "grid.zrange.1", "1", { step: "any", inputmode: "decimal" });
  const element = h(
    "div",
    { class: "field-row", hidden: true },
    field("Points along z", nz, "A volume: x × y × z points along a third direction, drawn as isosurfaces with a slider through its z slices."),
    field("z from", zmin),
    field("z to", zmax),
  );
  return {
    element,
    sync(dim) {
      element.hidden = dim !== "3";
    },
    apply(grid, num) {
      Object.assign(grid, { dim: 3, nz: num(nz), zrange: [num(zmin), num(zmax)] });
    },
    check(whole, range, minAxis) {
      range(zmin, zmax, "grid.zrange");
      return whole(nz, "grid.nz", minAxis);
    },
  };
}

/** The z fields' names on the form, by request path (for error messages). */
export const VOLUME_FIELD_WORDS = {
  "grid.nz": "Points along z",
  "grid.zrange": "z range",
  "grid.zrange.0": "z from",
  "grid.zrange.1": "z to",
};
