"""The skip-vs-plain reproduction: ``recipe`` fixes what is run, ``reproduce`` runs it and
measures every net, ``findings`` reads the numbers into verdicts, ``html`` writes the offline
report page."""

from landscape.report.recipe import ReproduceSpec
from landscape.report.reproduce import ReproduceResult, reproduce

__all__ = ["ReproduceResult", "ReproduceSpec", "reproduce"]
