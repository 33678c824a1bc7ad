"""Interoperation with the LSST butler (daf_butler): its export format, its repositories."""
