"""Jigsaw mosaics of the TGS tiles and the hand-crafted post-processing rules (SPEC 8); see docs/jigsaw.md.

Modules: edges (descriptors), solver (matching and placement), rules (SPEC 8.3), render (PNGs), tables (CSVs),
effect (measuring the rules on a validation fold). Nothing runs at import time.
"""
