"""The federation's status: what every site, flow, (source, destination) pair and release
looks like now (:mod:`.model`), read from each site within a deadline (:mod:`.probe`,
:mod:`.bounded`) and put together (:mod:`.assemble`)."""

from federation.status.model import (
    FederationStatus,
    FlowStatus,
    Lag,
    LoggedRun,
    PairStatus,
    ReleaseCell,
    ReleaseStatus,
    SiteStatus,
    ago,
    format_age,
)

__all__ = ["FederationStatus", "FlowStatus", "Lag", "LoggedRun", "PairStatus", "ReleaseCell",
           "ReleaseStatus", "SiteStatus", "ago", "format_age"]
