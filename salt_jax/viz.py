"""Pictures people would rather look at than read: tiles with mask outlines in a grid."""
import pathlib
from typing import Optional, Sequence

import cv2
import numpy as np

from salt_jax import fileio

PRED_COLOR = (0, 0, 255)    # BGR red: predicted mask
TRUE_COLOR = (0, 255, 0)    # BGR green: ground truth


def outline(tile_bgr: np.ndarray, mask: np.ndarray, color, scale: int) -> np.ndarray:
  """Draws the contours of a {0,1} (h,w) mask, upscaled by `scale`, onto a (h*s,w*s,3) image."""
  big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
  contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
  return cv2.drawContours(tile_bgr, contours, -1, color, 1)


def mask_grid(images: np.ndarray, pred_masks: Optional[np.ndarray] = None,
              true_masks: Optional[np.ndarray] = None, labels: Optional[Sequence[str]] = None,
              cols: int = 8, scale: int = 2) -> np.ndarray:
  """(N,101,101) uint8 tiles -> one BGR image: a grid of tiles with truth (green) / prediction (red)."""
  n = len(images)
  if n == 0:
    raise ValueError("no tiles to draw")
  h, w = images.shape[1] * scale, images.shape[2] * scale
  rows = -(-n // cols)
  pad = 4
  canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
  for i in range(n):
    tile = cv2.cvtColor(cv2.resize(images[i], (w, h), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    if true_masks is not None:
      tile = outline(tile, true_masks[i], TRUE_COLOR, scale)
    if pred_masks is not None:
      tile = outline(tile, pred_masks[i], PRED_COLOR, scale)
    if labels is not None:
      cv2.putText(tile, str(labels[i]), (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 0), 1)
    r, c = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    canvas[y:y + h, x:x + w] = tile
  return canvas


def save_png(path, image_bgr: np.ndarray) -> None:
  """Writes a (H,W) or (H,W,3) BGR uint8 image as a PNG under a temporary name, renamed when complete. The
  bytes are encoded in memory and written by Python, so a failed write is an UnwritableError naming `path`:
  cv2.imwrite reports success for a small image whose bytes a full disk refuses (the C library's buffer
  hides the error until the file is closed)."""
  ok, encoded = cv2.imencode(".png", image_bgr)
  if not ok:
    raise ValueError(f"OpenCV cannot encode an image of shape {image_bgr.shape} and dtype {image_bgr.dtype}")
  with fileio.atomic_path(path) as tmp:
    tmp.write_bytes(encoded.tobytes())
