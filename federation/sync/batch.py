"""A batch: the states one transaction applies, and where the source's cursor stands after it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from federation.registry.states import CalibSlotState, State, TagState


@dataclass
class Batch:
    """States that can be planned and applied on their own, in order.

    Datasets come with their RUN, dataset type and dimension records; chains
    with their children's definitions.
    """

    states: list[State] = field(default_factory=list)
    #: objects of this batch may have come in an earlier batch of the same operation (a
    #: snapshot of newly selected collections, files retried): it is planned again when
    #: it is applied
    repeats: bool = False

    @property
    def has_memberships(self) -> bool:
        """Tags or calibration slots: they name datasets that earlier batches bring (or
        fail to bring), and may come with datasets an earlier batch brought already."""
        return any(isinstance(s, TagState | CalibSlotState) for s in self.states)


#: batches with the source journal position the cursor moves to once each is applied
#: (None: it does not move, as inside a snapshot)
Marked = Iterator[tuple[Batch, int | None]]
