"""How files reach a site: one :class:`Transport` interface, one module per protocol."""

from federation.transport.base import RemoteFile, Transport, TransportError
from federation.transport.local import LocalTransport

__all__ = ["LocalTransport", "RemoteFile", "Transport", "TransportError"]
