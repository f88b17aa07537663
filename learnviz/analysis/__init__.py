"""Analyses: one module per analysis, each a function from plain inputs (arrays, probe
metadata) to a small frozen result dataclass that carries the method and parameters that made
it. Storage is kept out of the results: learnviz/analyze.py turns them into archive groups and
history rows."""
