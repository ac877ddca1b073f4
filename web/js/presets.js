// Ready-made comparisons: the degradation problem (Li et al. 2018, Fig. 5), one click away.
// The server lists them (GET /api/config) with the demo's own requests, so on a demo server
// a preset opens the surfaces already computed.

import { api } from "./api.js";

/** The presets: [{id, title, requests}]. */
export async function presets() {
  return (await api.config()).presets || [];
}

/** POST every request of a preset; resolves to the surface ids (cached or being computed). */
export async function startPreset(preset) {
  const replies = await Promise.all(preset.requests.map((spec) => api.createSurface(spec)));
  return replies.map((reply) => reply.surface?.id || reply.job?.surface_id);
}
