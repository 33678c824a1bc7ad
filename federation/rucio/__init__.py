"""Rucio underneath the sync: Rucio moves and protects a site's files, ``fed`` keeps the
registries consistent.

:mod:`settings` reads a site definition's ``rucio:`` block; :mod:`session` is the one
place that talks to a Rucio server (bulk calls, errors as one line, calls counted);
:mod:`names` maps datastore paths to Rucio names (identity); :mod:`hashing` computes
Rucio's checksums in the same read as the registry's; :mod:`register` registers a
site's files; :mod:`rules` places, waits for and removes replication rules.
"""
