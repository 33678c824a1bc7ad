"""Batch staging: a self-contained directory of inputs with a YAML registry (no database).

``fed stage`` writes one (:mod:`~federation.staging.stage`); a batch job
opens it with :class:`StagedButler`, reads the inputs and writes outputs to a
new RUN with their provenance; ``fed collect`` brings the outputs back into
the repository (:mod:`~federation.staging.collect`).
"""

from federation.staging.area import StagingArea
from federation.staging.butler import StagedButler
from federation.staging.model import DamagedStagingError

__all__ = ["DamagedStagingError", "StagedButler", "StagingArea"]
