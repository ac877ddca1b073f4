"""A monitor for the user's own training loop: λmax against 2/η, the Hessian trace, a 1-D
curve and a small 2-D surface every N steps, into an HDF5 run file and TensorBoard
(docs/monitor.md). ``landscape.monitor.lightning`` and ``landscape.monitor.hf`` wrap it as a
PyTorch Lightning and a Hugging Face callback."""

from landscape.monitor.monitor import Monitor, MonitorResult
from landscape.monitor.run_file import MonitorRun, attach_sharpness, read_run

__all__ = ["Monitor", "MonitorResult", "MonitorRun", "attach_sharpness", "read_run"]
