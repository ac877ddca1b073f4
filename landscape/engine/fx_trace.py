"""``torch.fx`` tracing that is safe beside other threads running models.

``torch.fx.symbolic_trace`` patches ``nn.Module.__call__`` and ``__getattr__`` for the whole
process while it traces, so a model that another thread runs at that moment (a second job of
the service, training or evaluating) enters the tracer and fails with "module is not installed
as a submodule". Here the tracer passes calls from other threads straight through, and one lock
keeps two traces from nesting their patches (the second would restore the first's wrapper and
leave it installed for good).
"""

from __future__ import annotations

import threading
from typing import Any

from torch import fx, nn

_TRACING = threading.Lock()


class _ThisThreadTracer(fx.Tracer):
    """An ``fx.Tracer`` that records only what its own thread calls."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def symbolic_trace(module: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(module)``, without disturbing other threads' models."""
    with _TRACING:
        tracer = _ThisThreadTracer()
        graph = tracer.trace(module)
        return fx.GraphModule(tracer.root, graph, type(module).__name__)
