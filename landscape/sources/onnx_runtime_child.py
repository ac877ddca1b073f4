"""ONNX Runtime on one input, in a process of its own: the child side of ``onnx_sandbox``.

Run by path (``python -I onnx_runtime_child.py MODEL INPUT OUTPUT INPUT_NAME LIMIT``), so it
imports neither landscape nor torch: only numpy and onnxruntime, after capping its own address
space at LIMIT bytes (``RLIMIT_AS``), so that a graph asking for more memory fails here, in a
process that can die, never in the server. It prints one JSON line: ``{"ok": true}`` with the
first output saved to OUTPUT (``.npy``), or ``{"error": kind, "message": text}``, ``kind``
being ``"memory"`` when an allocation failed.
"""

import json
import re
import resource
import sys

_MEMORY = re.compile(r"alloc|out of memory|MemoryError", re.IGNORECASE)


def main(argv: list[str]) -> int:
    model, x_path, out_path, input_name, limit = argv[1:6]
    try:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    except (ValueError, OSError) as exc:  # never run the graph without the limit
        _answer({"error": "runtime", "message": f"cannot limit the check's memory: {exc}"})
        return 1
    try:
        import numpy as np
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1  # one core, and thread stacks within the limit
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, {input_name: np.load(x_path, allow_pickle=False)})
        np.save(out_path, np.asarray(outputs[0]), allow_pickle=False)
    except MemoryError:
        _answer({"error": "memory", "message": "MemoryError"})
        return 1
    except Exception as exc:  # the graph's failure, reported to the parent as data
        text = (str(exc).strip().splitlines() or [""])[0][:400]
        kind = "memory" if _MEMORY.search(text) else "runtime"
        _answer({"error": kind, "message": f"{type(exc).__name__}: {text}"})
        return 1
    _answer({"ok": True})
    return 0


def _answer(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
