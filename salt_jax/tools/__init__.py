"""Experiments on the library, not part of it: speed of the hot paths (bench) and whether whole-mosaic
context helps a fold's validation tiles (section_check). The library never imports them."""
