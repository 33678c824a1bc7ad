"""Data releases: frozen, hash-identified sets of datasets and what they protect."""
