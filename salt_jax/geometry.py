"""The tile geometry, defined once: Kaggle tiles are 101x101 and the networks see 128x128 canvases.

Tiles are replicate-padded 101 -> 128 (13 rows/columns before, 14 after at evaluation, SPEC 2.1, 10.4)
and model outputs are cropped back with `CROP`.
"""
TILE = 101                       # side of a Kaggle tile (pixels)
TILE_SHAPE = (TILE, TILE)
TILE_PIXELS = TILE * TILE
CANVAS = 128                     # side of the network input
PAD_TOTAL = CANVAS - TILE        # 27
PAD_CENTER = 13                  # evaluation pad before (after: PAD_TOTAL - PAD_CENTER = 14)
CROP = slice(PAD_CENTER, PAD_CENTER + TILE)
