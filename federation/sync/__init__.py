"""The sync core: a window on the source, batches of states, planned, then fetched and
applied (see the README, "How a sync works")."""
