"""Wire schemas, one module per job kind (``surface``, ``hessian``, ``gradient_flow``, ``report``)
and ``common`` for what they share; apart from storage (``api/db.py``)."""
