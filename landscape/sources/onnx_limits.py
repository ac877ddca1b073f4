"""What an ONNX upload may be: the bounds the graph's cost is checked against
(``onnx_bounds``) and the tolerances of the check against ONNX Runtime (``onnx_import``).
Its own module because both of those read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnnxLimits:
    """What an upload may be, and how closely the conversion must match ONNX Runtime.

    The cost bounds hold at the check's batch (``check_batch`` samples), the batch the check
    runs; a surface's forward passes cost the same per sample. The zoo's largest model,
    DenseNet-BC-100 on 32 × 32 images, needs 0.66 M elements in its largest tensor, 37 M in
    all and 1.8 GFLOP at that batch: the bounds leave it a margin of 7 to 25.
    """

    max_bytes: int = 256 * 2**20
    max_nodes: int = 20_000
    max_tensor_elements: int = 2**24  # one intermediate: 64 MiB in float32
    max_total_elements: int = 2**28  # all intermediates together: 1 GiB in float32
    max_flops: int = 2 * 10**10  # one forward pass of the check's batch
    check_memory_bytes: int = 2 * 2**30  # ONNX Runtime's address space (child process)
    check_timeout_s: float = 60.0  # ONNX Runtime's run, session creation included
    check_batch: int = 3  # an odd size: a graph exported with a fixed batch size shows up
    check_seed: int = 0
    rtol: float = 1e-4
    atol: float = 1e-5
