"""One command that checks a GPU box end to end and says, step by step, what holds.

    python scripts/gpu-check.py --device cuda --out DIR     # `make gpu-check`; ≤ 8 min, H100/H200
    python scripts/gpu-check.py --device cpu --out DIR      # the same steps, small: CI
    python scripts/gpu-check.py --only a c f                # some steps (the others: skip)

On CUDA the GPU tests (b) run in a subprocess beside steps c–e, which time nothing; steps f–h
wait for them (``--serial``: run b alone). On CPU this process uses one torch thread
(``--threads``), as each engine worker does.

Steps (each reports pass / fail / skip, its key numbers and seconds):

  a versions        torch, CUDA, cuDNN, Triton, GPU, driver; a C compiler on PATH (and that it
                    builds a Python extension, as Triton does); whether torch.compile compiles a
                    tiny function on the device, in a fresh process with empty caches
  b gpu tests       ``pytest -m gpu -q`` over the test files that carry a gpu mark (a file
                    importing the web stack would stop collection on a box without it)
  c correctness     fp32/tf32/bf16 × eager/forced compile × K ∈ {1, 4} against the CPU
                    reference loop (resnet20 on digits): max relative error of the loss per cell
  d six evaluators  six GridEvaluators built and closed in one process: recompiles, CUDA memory
                    before/after (must return to the baseline)
  e host syncs      per grid point: the engine's ``describe()["host_syncs"]`` and, on CUDA, the
                    synchronizing calls torch's sync debug mode counts
  f resnet56        ResNet-56 on 50,000 CIFAR-shaped random samples: the engine's memory model vs
                    ``torch.cuda.max_memory_allocated``; tf32 and bf16 s/point, projected 51×51
  g surface         a 21×21 resnet20-on-digits surface through ``compute_surface`` (HDF5 in a
                    temp dir), engine defaults vs compile=False: wall times, values agree
  h worker pool     two engine workers on one GPU, one SIGKILLed mid-run: replaced, values still
                    equal the reference (the engine runs one worker per GPU: the check then
                    drives its WorkerPool with two processes on the GPU itself)

Needs only torch, numpy, scipy, scikit-learn, h5py (and pytest for step b): the landscape
modules it imports pull in no FastAPI, Plotly or ONNX (tests/test_gpu_check.py runs it with
those blocked). Engine details it reads from ``GridEvaluator.describe()`` (``compiled``,
``compile_reason``, ``oom_retries``, ``batch_size``, ``points_per_call``, ``host_syncs``,
``precision``) are read with ``.get`` and shown as n/a where an engine lacks them.

Writes ``DIR/gpu-check.json`` (every step: status, summary, seconds, details) and
``DIR/gpu-check.txt`` (the table); step b adds ``gpu-tests.xml`` and ``gpu-tests.log``. Exits 1
if any step failed, 0 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a checkout without `pip install` (the GPU box)
    sys.path.insert(0, str(ROOT))

from scripts.gpu_check.main import main  # noqa: E402  (after the path above)

if __name__ == "__main__":
    sys.exit(main())
