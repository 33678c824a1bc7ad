"""Site definitions (``sites/NAME.yaml``): the sites of a federation, how each is reached,
and which collection prefixes each owns."""

from federation.sites.definition import (
    DafButlerRepository,
    LocalRegistry,
    PublishedRegistry,
    RegistryAccess,
    SiteDefinition,
)
from federation.sites.loader import (
    SITES_ENV,
    check_site_name,
    list_sites,
    load_site,
    parse_site,
    read_yaml,
    sites_dir,
)
from federation.sites.ownership import owner_by_prefix, under

__all__ = ["SITES_ENV", "DafButlerRepository", "LocalRegistry", "PublishedRegistry",
           "RegistryAccess", "SiteDefinition", "check_site_name", "list_sites", "load_site",
           "owner_by_prefix", "parse_site", "read_yaml", "sites_dir", "under"]
