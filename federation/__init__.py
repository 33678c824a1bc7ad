"""federation: federated multi-site repositories for astronomical data.

The names below are imported on first use so that ``import federation`` and
the ``fed`` command start instantly.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Butler", "FileDataset", "Registry", "DatasetRef", "DatasetType", "CollectionType",
    "IdMode", "Timespan", "DimensionUniverse", "FederationError",
]

_WHERE = {
    "Butler": "federation.butler",
    "FileDataset": "federation.butler",
    "Registry": "federation.registry.registry",
    "DatasetRef": "federation.model",
    "DatasetType": "federation.model",
    "CollectionType": "federation.model",
    "IdMode": "federation.model",
    "Timespan": "federation.timespan",
    "DimensionUniverse": "federation.dimensions.universe",
    "FederationError": "federation.errors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'federation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
