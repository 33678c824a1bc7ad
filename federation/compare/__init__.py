"""Comparing the same processing done at two sites (use case LDF104).

Two runs' datasets are paired by dataset type and data ID (each site made its
own datasets, so their UUIDs differ) and every pair is classified: identical
bytes, equivalent within a tolerance, different, or on one side only.

- :mod:`.model`: the classes, the tolerance, the statistics and summaries;
- :mod:`.pairing`: pairing by dataset type + data ID;
- :mod:`.files`: each file verified against its record before it is read, fetched
  into a cache when another site holds it;
- :mod:`.content` with :mod:`.arrays`, :mod:`.tables`, :mod:`.structures`: content
  compared as its storage class says;
- :mod:`.runner`: classifying the pairs, reading only the files it has to;
- :mod:`.report` (with :mod:`.report_page`): the HTML report with its plots.

Nothing is imported here, so that naming the package costs nothing (``fed --help``
reads the defaults of :mod:`.model`); import from the modules.
"""
