// Ready-made comparisons: the degradation problem (Li et al. 2018, Fig. 5), one click away.
// The requests equal `landscape serve --demo`'s (api/demo.py; the label is not part of the
// cache key), so on a demo server the presets open already computed surfaces.

import { api } from "./api.js";

const GRID = { nx: 21, ny: 21, xrange: [-1, 1], yrange: [-1, 1] };
const DIRECTIONS = { normalization: "filter", ignore: "biasbn", seed: 0 };

function request(model, label) {
  return {
    model,
    dataset: "digits",
    train: { epochs: 30 }, // api/demo.py's DEMO_EPOCHS
    grid: GRID,
    directions: DIRECTIONS,
    splits: ["train"],
    label,
  };
}

export const PRESETS = [
  {
    id: "resnet56",
    title: "ResNet-56 vs ResNet-56 without shortcuts",
    requests: [request("resnet56", "ResNet-56"), request("resnet56-noshort", "ResNet-56, no shortcuts")],
  },
  {
    id: "resnet20",
    title: "ResNet-20 vs ResNet-20 without shortcuts",
    requests: [request("resnet20", "ResNet-20"), request("resnet20-noshort", "ResNet-20, no shortcuts")],
  },
];

/** POST every request of a preset; resolves to the surface ids (cached or being computed). */
export async function startPreset(preset) {
  const replies = await Promise.all(preset.requests.map((spec) => api.createSurface(spec)));
  return replies.map((reply) => reply.surface?.id || reply.job?.surface_id);
}
