"""Pull-through reads and the shared cache (DRP17): files held at other sites fetched on
read into a repository several users share, within a size limit, least recently read
evicted first through ``fed drop``'s rule (see :mod:`federation.operations.cache`)."""

from federation.cache.config import CacheConfig, format_size, parse_size
from federation.cache.pull import PullThrough

__all__ = ["CacheConfig", "PullThrough", "format_size", "parse_size"]
