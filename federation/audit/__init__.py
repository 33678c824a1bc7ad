"""Audits and repairs of a repository's files (``fed audit``, ``fed repair``).

* :mod:`.scan`: every recorded file of the datastore checked (size, and xxh3-128 for
  all or a sample) on every core, resumably (:mod:`.notes`);
* :mod:`.dark`: files in the datastore that no record names, by one directory walk;
  quarantined on request, never deleted;
* :mod:`.holders`: files recorded as held at another site, looked for there;
* :mod:`.audit`: the audit, phase by phase; :mod:`.repair`: missing or corrupt files
  fetched from other sites through the sync core's fetcher, verified against this
  repository's record before they are renamed into place.
"""
