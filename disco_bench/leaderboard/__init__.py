"""The leaderboard, in pieces with one job each:

- ``paper``: reading and checking ``paper_numbers.yaml`` (tables, columns, named settings);
- ``matching``: which settings a record was measured under, which runs may be pooled, and which
  records fill a paper cell;
- ``suite_lookup``: the step of the ``full`` suite that fills a missing cell;
- ``cells``: the paper tables' cells (one pool of runs each);
- ``markdown``: LEADERBOARD.md; ``plots``: its PNGs (matplotlib); ``export``: the CSV files.

``disco_bench.report.write_report`` puts them together.
"""
