"""From a validated request to the plan a job stores, one module per job kind (``surface``,
``hessian``, ``gradient_flow``, ``report``) and ``common`` for what they share; ``cost``
prices a plan, ``budget`` refuses one over this server's budgets saying what fits, ``rate``
turns FLOPs into seconds."""
