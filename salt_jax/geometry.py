"""The tile geometry, defined once: Kaggle tiles are 101x101 and the networks see 128x128 canvases (the
original's; `config.input_size` may choose another canvas, e.g. 112 or 104).

Tiles are replicate-padded 101 -> canvas (for 128: 13 rows/columns before, 14 after at evaluation, SPEC
2.1, 10.4) and model outputs are cropped back with `crop_slice(canvas)` (`CROP` for 128).
"""
TILE = 101                       # side of a Kaggle tile (pixels)
TILE_SHAPE = (TILE, TILE)
TILE_PIXELS = TILE * TILE
CANVAS = 128                     # side of the network input
PAD_TOTAL = CANVAS - TILE        # 27
PAD_CENTER = 13                  # evaluation pad before (after: PAD_TOTAL - PAD_CENTER = 14)
CROP = slice(PAD_CENTER, PAD_CENTER + TILE)


def pad_total(canvas: int) -> int:
  """Rows (and columns) of padding around a tile on a canvas: 27 for 128."""
  if canvas < TILE:
    raise ValueError(f"a canvas of {canvas} px cannot hold a {TILE} px tile")
  return canvas - TILE


def pad_center(canvas: int) -> int:
  """Evaluation padding before the tile (the rest goes after): 13 for 128, 5 for 112."""
  return pad_total(canvas) // 2


def crop_slice(canvas: int) -> slice:
  """The tile's rows (and columns) on the canvas."""
  return slice(pad_center(canvas), pad_center(canvas) + TILE)
