"""The leaderboard, in pieces with one job each:

- ``table``: the records read once into one tidy table (a row per measurement, a column per
  setting, the checkpoint's lineage); every other piece is a view of it, and ``results.csv`` is it;
- ``paper``: reading and checking ``paper_numbers.yaml`` (tables, columns, named settings, the step
  that fills each cell);
- ``matching``: which settings a record was measured under, which runs may be pooled, and which
  records fill a paper cell;
- ``cells``: the paper tables' cells (one pool of runs each);
- ``markdown``: LEADERBOARD.md; ``plots``: its PNGs (matplotlib); ``export``: leaderboard.csv.

The claims (``disco_bench.claims``, on ``disco_bench.stats``) are a view of the same table.
``disco_bench.report.write_report`` puts them together.
"""
