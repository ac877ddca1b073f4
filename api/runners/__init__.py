"""Job runners, one module per kind of job: each turns a stored plan into one library call.

``base`` holds what every runner shares (``JobKind``, ``JobContext``, the ``Runner`` type,
and ``engine_options``: where a job runs comes from the executing worker's settings);
``surface`` trains when needed and calls ``compute_surface``; ``hessian`` calls ``analyze``.
The worker (``api/worker.py``) maps a job's kind to its runner and knows nothing else.
"""
