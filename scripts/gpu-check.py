"""One command that checks a GPU box end to end and says, step by step, what holds.

    python scripts/gpu-check.py --device cuda --out DIR     # `make gpu-check`; H100/H200
    python scripts/gpu-check.py --device cpu --out DIR      # the same steps, small: CI
    python scripts/gpu-check.py --only a c f                # some steps (the others: skip)

Runs from a checkout with whatever Python has CUDA torch (no install, no network: it puts the
checkout on ``sys.path`` itself, and on ``PYTHONPATH`` for the processes it starts).

On CUDA the GPU tests (b) run in a subprocess beside steps c–e, which time nothing; steps f–j
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
  i service         ``python -m landscape serve`` on a free loopback port, a temporary data dir,
                    its in-process worker on the device; a 5×5 resnet20 surface posted as
                    README's REST example (one training epoch), its job polled to done, the
                    surface read (values finite) and its file downloaded (it reads back, computed
                    on the device), then SIGTERM and a clean stop. Skips, naming the missing
                    module, where the web stack (FastAPI, uvicorn, …) is not installed
  j long-lived      ``--long-lived-surfaces`` (40) BN-folded 3×3 ResNet-8 surfaces on digits in
                    this process, compile forced: per surface whether it ran compiled and the
                    compiled graphs (dynamo's counters); fails if the last ran eager or the
                    second half of them still added graphs (``--long-lived-budget`` seconds)

Needs only torch, numpy, scipy, scikit-learn, h5py (and pytest for step b, the web stack for
step i): the landscape modules it imports pull in no FastAPI, Plotly or ONNX
(tests/test_gpu_check.py runs it with those blocked). Engine details it reads from
``GridEvaluator.describe()`` (``compiled``, ``compile_reason``, ``oom_retries``,
``batch_size``, ``points_per_call``, ``host_syncs``, ``precision``) are read with ``.get``
and shown as n/a where an engine lacks them.

Writes ``DIR/gpu-check.jsonl`` as it goes, each line also printed: first the versions (driver,
CUDA of torch and the loaded runtime, the driver's CUDA, cuDNN, Triton, torch, Python, GPU and
its memory), then one line per step as it ends (status, summary, seconds, details, and the
warnings and WARNING log records it raised), last a summary — a run stopped by a time limit
keeps every finished step, and SIGTERM records the running step as interrupted. At the end
``DIR/gpu-check.json`` (all of it) and ``DIR/gpu-check.txt`` (the table); step b adds
``gpu-tests.xml`` and ``gpu-tests.log``, step i ``service.log``. Exits 1 if any step failed, 0
otherwise.
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
