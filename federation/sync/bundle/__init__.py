"""Bundles: a sync written to a file, for sites that cannot reach each other (``fed export``,
``fed import``, and the outboxes and inboxes built on them)."""
