"""Hand-crafted post-processing rules over jigsaw mosaics (SPEC 8.3), on 2-D {0,1} masks.

Tiles come in two kinds: *known* ("train") tiles with ground-truth masks ({id: mask}) and *unknown* ("test")
tiles with predicted masks (a `Submission`); only unknown tiles ever change, and each step returns a new
Submission. A tile that is placed in a mosaic but has no mask in either (e.g. test tiles while measuring
on a validation fold without test predictions) still occupies its cell but is otherwise ignored. Rules run in
the order vertical -> empty -> smooth (`apply_rules`); each step sees the output of the previous one,
exactly like the original's S -> S-vertical -> S-vertical-empty -> S-vertical-empty-smooth chain.

Numeric quirk made explicit: the original sums 3-channel copies of 0/255 masks, so its "> 50*50*255" and
"<= 10*255" thresholds are areas > 833 px (`AREA_LARGE`) and <= 3 px (`AREA_TINY`) on a 2-D mask (SPEC 10.22).

Choices where the SPEC leaves an order open (documented in docs/jigsaw.md):
* Known tiles are scanned in the order of the `known` mapping (train.csv order from the CLI), unknown tiles
  in the submission's order; a later assignment never overrides an earlier one within a rule map.
* Smooth-rule sides are scanned top, bottom, left, right; the "first recorded value per key wins".
* Real tiles take precedence over virtual tiles at the same cell (SPEC's recommendation).
* "No test tile with salt" is `None` rather than the sentinel y = 100 (identical below 100 tiles per column).
* The 3-key down+left+right synthesis crashes in the original when "down" has no gap; here it yields nothing.
* Options: `max_mosaic_id` (default 158, the original's "mapid <= 158"; None = all mosaics) limits the
  empty and smooth rules.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np
import pandas as pd

from salt_jax import geometry
from salt_jax.data.errors import plain
from salt_jax.data.submission import Submission

SIZE = geometry.TILE
AREA_LARGE = 833  # vertical rule 3_2: "predicted area > 833 px" (nominal 50*50*255 on 3 channels)
AREA_TINY = 3  # vertical rule 3_2(b): "own predicted area <= 3 px" (nominal 10*255 on 3 channels)
SEMI_VERTICAL_FROM_ROW = int(SIZE * 0.8)  # rows 80..100 must equal the bottom row (vertical_y_ratio 0.8)
MAX_MOSAIC_ID = 158  # empty and smooth rules only touch mosaics 0..158 (the 159 largest)
FAR_SLOPE = 1e10  # slope() of a horizontal segment in the smooth-rule synthesis

Masks = Mapping[str, np.ndarray]  # {id: (101,101) {0,1} mask}: known tiles, or a Submission


# --------------------------------------------------------------------------------------------- mosaics
class MosaicIndex:
  """Lookups over a mosaic table with columns id, mosaic_id, x, y (x right, y down).

  `pos[id] = (mosaic, x, y)` (an id keeps its first row); `cell[(mosaic, x, y)] = id` (first id wins).
  """

  def __init__(self, table: pd.DataFrame):
    self.pos: Dict[str, Tuple[int, int, int]] = {}
    self.cell: Dict[Tuple[int, int, int], str] = {}
    for tid, m, x, y in zip(table["id"].astype(str), table["mosaic_id"], table["x"], table["y"]):
      key = (int(m), int(x), int(y))
      self.pos.setdefault(tid, key)
      self.cell.setdefault(key, tid)
    self._columns: Dict[Tuple[int, int], List[Tuple[int, str]]] = {}
    for (m, x, y), tid in self.cell.items():
      self._columns.setdefault((m, x), []).append((y, tid))
    for col in self._columns.values():
      col.sort()

  def column(self, tid: str) -> List[Tuple[int, str]]:
    """[(y, id)] of the column (same mosaic, same x) of `tid`, top to bottom."""
    m, x, _ = self.pos[tid]
    return self._columns[(m, x)]

  def neighbour(self, tid: str, dx: int, dy: int) -> Optional[str]:
    m, x, y = self.pos[tid]
    return self.cell.get((m, x + dx, y + dy))

  def in_mosaics(self, ids: Iterable[str], max_mosaic_id: Optional[int] = None) -> List[str]:
    """The ids (in the given order) that are placed, optionally only in mosaics <= max_mosaic_id."""
    return [t for t in ids if t in self.pos and (max_mosaic_id is None or self.pos[t][0] <= max_mosaic_id)]


# ---------------------------------------------------------------------------------------- mask classes
def is_full_vertical(mask: np.ndarray) -> bool:
  """Bottom row partially salt and every row equal to it: full-height vertical stripes (SPEC 8.3 step 1)."""
  bottom = mask[-1]
  return 0 < bottom.sum() < SIZE and bool((mask == bottom).all())


def is_semi_vertical(mask: np.ndarray) -> bool:
  """Bottom row partially salt, rows 80..100 equal to it, and not full-vertical (SPEC 8.3 step 1)."""
  bottom = mask[-1]
  return (0 < bottom.sum() < SIZE and bool((mask[SEMI_VERTICAL_FROM_ROW:] == bottom).all())
          and not is_full_vertical(mask))


def _bottom_full(mask: np.ndarray) -> bool:
  return bool(mask[-1].all())


# ---------------------------------------------------------------------------------------- step 2: vertical
RULE_ORDER = ("1", "2", "3_1", "3_2", "3_3", "3_4")


def vertical_assignments(mos: MosaicIndex, known: Masks, unknown: Masks
                         ) -> Tuple[Dict[str, Tuple[str, str]], Dict[str, str]]:
  """Vertical-rule maps (SPEC 8.3 step 2).

  Returns:
    full: unknown id -> (known full-vertical id k, rule name), rules combined in RULE_ORDER, first wins;
    semi: unknown id -> known semi-vertical id k (every unknown tile below k in its column).
  """
  per_rule: Dict[str, Dict[str, str]] = {r: {} for r in RULE_ORDER}
  full_ids = [k for k in mos.in_mosaics(known) if is_full_vertical(known[k])]
  full_set = set(full_ids)
  area = {t: int(unknown[t].sum()) for t in unknown}
  for k in full_ids:
    _, _, yk = mos.pos[k]
    col = mos.column(k)
    above = mos.neighbour(k, 0, -1)
    if above in unknown:
      per_rule["1"].setdefault(above, k)
    for y, t in col:
      if y > yk and t in unknown:
        per_rule["2"].setdefault(t, k)
    max_y = max((y for y, t in col if y < yk and t in known and t != k and t not in full_set), default=-1)
    salty = [y for y, t in col if t in unknown and area[t] > 0]
    large = [y for y, t in col if t in unknown and area[t] > AREA_LARGE]
    min_y_test = min(salty, default=None)
    min_y_test_m = min(large, default=None)
    cells = dict(col)
    for yv, v in col:
      if v not in unknown or yv >= yk:
        continue
      if max_y != -1:
        if max_y < yv:
          rule = "3_4" if known[cells[max_y]].any() else "3_1"
          per_rule[rule].setdefault(v, k)
        continue
      if min_y_test_m is not None and yv > min_y_test_m:
        per_rule["3_2"].setdefault(v, k)
      elif (min_y_test is not None and area[cells[min_y_test]] <= AREA_LARGE and area[v] <= AREA_TINY
            and yv > min_y_test):
        per_rule["3_2"].setdefault(v, k)
      if min_y_test is None and yv >= yk // 2:
        per_rule["3_3"].setdefault(v, k)
  full: Dict[str, Tuple[str, str]] = {}
  for rule in RULE_ORDER:
    for t, k in per_rule[rule].items():
      full.setdefault(t, (k, rule))
  semi: Dict[str, str] = {}
  for k in mos.in_mosaics(known):
    if is_semi_vertical(known[k]):
      yk = mos.pos[k][2]
      for y, t in mos.column(k):
        if y > yk and t in unknown:
          semi.setdefault(t, k)
  return full, semi


def apply_vertical(mos: MosaicIndex, known: Masks, unknown: Submission
                   ) -> Tuple[Submission, Dict[str, str]]:
  """Copies full-vertical train masks / replicated semi-vertical bottom rows onto unknown tiles.

  Returns (new unknown masks, {changed id: rule name}).
  """
  full, semi = vertical_assignments(mos, known, unknown)
  new, changed = {}, {}
  for t, (k, rule) in full.items():
    new[t] = known[k]
    changed[t] = "vertical_" + rule
  for t, k in semi.items():  # semi overrides full-vertical
    new[t] = np.repeat(known[k][-1:], SIZE, axis=0)
    changed[t] = "vertical_semi"
  return unknown.replace(new), changed


# ------------------------------------------------------------------------------------------- step 3: empty
def virtual_cells(mos: MosaicIndex, known: Masks, max_mosaic_id: Optional[int] = MAX_MOSAIC_ID
                  ) -> Set[Tuple[int, int, int]]:
  """Cells (mosaic, x, y) holding a virtual tile: salt of a known tile leaking into the next column.

  For a non-empty known tile at (x, y): left column with > 1 salt px -> (x-1, y), else a fully salt bottom row
  -> (x-1, y+1); the same to the right. Cells that hold a real tile are dropped (real tiles take precedence).
  """
  cells = set()
  for i in mos.in_mosaics(known, max_mosaic_id):
    mask = known[i]
    if not mask.any():
      continue
    m, x, y = mos.pos[i]
    for dx, line in ((-1, mask[:, 0]), (1, mask[:, -1])):
      if line.sum() > 1:
        cells.add((m, x + dx, y))
      elif _bottom_full(mask):
        cells.add((m, x + dx, y + 1))
  return {c for c in cells if c not in mos.cell}


def empty_targets(mos: MosaicIndex, known: Masks, unknown: Masks,
                  max_mosaic_id: Optional[int] = MAX_MOSAIC_ID) -> Dict[str, str]:
  """Unknown tiles to force empty (SPEC 8.3 step 3): {id: "empty_1" | "empty_2"}.

  Rule 1: below a known tile whose bottom row is all salt. Rule 2: below an empty known tile with salt above
  it in its column (a non-empty known/unknown tile, or a virtual tile).
  """
  virtual = virtual_cells(mos, known, max_mosaic_id)
  out: Dict[str, str] = {}
  for i in mos.in_mosaics(known, max_mosaic_id):
    m, x, yi = mos.pos[i]
    col = mos.column(i)
    if _bottom_full(known[i]):
      rule = "empty_1"
    elif not known[i].any():
      salt_above = any((t in known and known[t].any()) or (t in unknown and unknown[t].any())
                       for y, t in col if y < yi)
      salt_above = salt_above or any((m, x, y) in virtual for y in range(-1, yi))
      if not salt_above:
        continue
      rule = "empty_2"
    else:
      continue
    for y, t in col:
      if y > yi and t in unknown:
        out.setdefault(t, rule)
  return out


def apply_empty(mos: MosaicIndex, known: Masks, unknown: Submission,
                max_mosaic_id: Optional[int] = MAX_MOSAIC_ID) -> Tuple[Submission, Dict[str, str]]:
  """Zeroes the unknown tiles selected by `empty_targets`; returns (new masks, {changed id: rule})."""
  targets = empty_targets(mos, known, unknown, max_mosaic_id)
  return unknown.replace({t: np.zeros_like(unknown[t]) for t in targets}), targets


# ------------------------------------------------------------------------------------------ step 4: smooth
# side of the source -> (dx, dy of the neighbour, key recorded at the neighbour)
_SIDES = (("top", 0, -1, "down"), ("bottom", 0, 1, "up"), ("left", -1, 0, "right"), ("right", 1, 0, "left"))


def _line(mask: np.ndarray, side: str) -> np.ndarray:
  return {"top": mask[0], "bottom": mask[-1], "left": mask[:, 0], "right": mask[:, -1]}[side]


def boundary_keys(mos: MosaicIndex, sources: Iterable[str], source_masks: Masks, unknown: Masks
                  ) -> Dict[str, Dict[str, np.ndarray]]:
  """Boundary vectors recorded at predicted-empty unknown neighbours of partially salty borders (4a/4b).

  A border line counts if it is partially salt (1 < salt px < 101). Keys name the target's side ("up" = its
  top line). The first value recorded per key wins.
  """
  rec: Dict[str, Dict[str, np.ndarray]] = {}
  for i in sources:
    mask = source_masks[i]
    for side, dx, dy, key in _SIDES:
      line = _line(mask, side)
      if not 1 < line.sum() < SIZE:
        continue
      t = mos.neighbour(i, dx, dy)
      if t in unknown and not unknown[t].any():
        rec.setdefault(t, {}).setdefault(key, line.copy())
  return rec


def pad_keys(mos: MosaicIndex, rec: Dict[str, Dict[str, np.ndarray]], unknown: Masks) -> None:
  """Adds missing keys from the targets' unknown neighbours with salt on the touching line (in place)."""
  for t, keys in rec.items():
    for key, dx, dy, side in (("up", 0, -1, "bottom"), ("down", 0, 1, "top"), ("left", -1, 0, "right"),
                              ("right", 1, 0, "left")):
      if key in keys:
        continue
      u = mos.neighbour(t, dx, dy)
      if u in unknown:
        line = _line(unknown[u], side)
        if line.any():
          keys[key] = line.copy()


def _slope(x1, y1, x2, y2) -> float:
  return (x2 - x1) / (y2 - y1) if y2 != y1 else FAR_SLOPE


def _first(v) -> int:
  return int(np.flatnonzero(v)[0])


def _last(v) -> int:
  return int(np.flatnonzero(v)[-1])


def _fill_down_left(m: np.ndarray, left_first: int, down_last: int) -> None:
  k1 = _slope(0, left_first, down_last, 100)
  for r in range(left_first, SIZE):
    m[r, 0:min(SIZE, int(k1 * (r - left_first)))] = 1


def _fill_down_right(m: np.ndarray, right_first: int, down_first: int) -> None:
  k1 = _slope(100, right_first, down_first, 100)
  for r in range(right_first, SIZE):
    m[r, max(0, int(k1 * (r - right_first) + 100)):SIZE] = 1


def _fill_up_down(m: np.ndarray, up: np.ndarray, down: np.ndarray) -> None:
  uf, ul, df, dl = _first(up), _last(up), _first(down), _last(down)
  k1, k2 = _slope(uf, 0, df, 100), _slope(ul, 0, dl, 100)
  for r in range(SIZE):
    m[r, max(0, int(k1 * r + uf)):min(SIZE, int(k2 * r + ul))] = 1


def _fill_left_right(m: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
  lf, rf = _first(left), _first(right)
  k1 = _slope(lf, 0, rf, 100)
  for c in range(SIZE):
    m[min(100, max(0, int(k1 * c + lf))):SIZE, c] = 1


def synthesize_train_driven(keys: Mapping[str, np.ndarray]) -> Optional[np.ndarray]:
  """Mask from the boundary vectors of a train-driven (4a) target, SPEC 8.3 step 4; None if nothing/empty.

  Slices are [start, end) like the original (the last column/row of an interval is not filled: FAITHFUL).
  """
  m = np.zeros((SIZE, SIZE), np.uint8)
  ks = frozenset(keys)
  if len(ks) == 1:
    (key, v), = keys.items()
    if key in ("up", "down"):
      m[:] = v[None, :]
    else:
      m[:] = v[:, None]
  elif ks == {"up", "down"}:
    _fill_up_down(m, keys["up"], keys["down"])
  elif ks == {"left", "right"}:
    _fill_left_right(m, keys["left"], keys["right"])
  elif ks == {"up", "left"}:
    up, lf = keys["up"], _first(keys["left"]) or 1
    uf, ul = _first(up), _last(up)
    k1 = _slope(uf, 0, 0, lf)
    for r in range(SIZE):
      m[r, max(0, int(k1 * r + uf)):ul] = 1
  elif ks == {"up", "right"}:
    up, rf = keys["up"], _first(keys["right"]) or 1
    uf, ul = _first(up), _last(up)
    k2 = _slope(ul, 0, 100, rf)
    for r in range(SIZE):
      m[r, uf:min(SIZE, int(k2 * r + ul))] = 1
  elif ks == {"down", "left"}:
    _fill_down_left(m, _first(keys["left"]), _last(keys["down"]))
  elif ks == {"down", "right"}:
    _fill_down_right(m, _first(keys["right"]), _first(keys["down"]))
  elif ks == {"down", "left", "right"}:
    gap = np.flatnonzero(keys["down"] == 0)
    if not len(gap):  # the original crashes here
      return None
    _fill_down_left(m, _first(keys["left"]), int(gap[0]))
    _fill_down_right(m, _first(keys["right"]), int(gap[-1]))
  else:
    return None
  return m if m.any() else None


def synthesize_test_driven(keys: Mapping[str, np.ndarray]) -> Optional[np.ndarray]:
  """Mask from the boundary vectors of a test-driven (4b) target, SPEC 8.3 step 4; None if nothing/empty."""
  m = np.zeros((SIZE, SIZE), np.uint8)
  ks = frozenset(keys)
  if ks == {"up", "down"}:
    _fill_up_down(m, keys["up"], keys["down"])
  elif ks == {"left", "right"}:
    _fill_left_right(m, keys["left"], keys["right"])
  elif ks == {"down", "left"}:
    down = keys["down"]
    down_last = int(np.flatnonzero(down == 0)[0]) if not down.all() else _last(down)
    _fill_down_left(m, _first(keys["left"]), down_last)
  elif ks == {"down", "right"}:
    down = keys["down"]
    down_first = int(np.flatnonzero(down == 0)[-1]) if not down.all() else _first(down)
    _fill_down_right(m, _first(keys["right"]), down_first)
  else:
    return None
  return m if m.any() else None


def apply_smooth(mos: MosaicIndex, known: Masks, unknown: Submission,
                 max_mosaic_id: Optional[int] = MAX_MOSAIC_ID) -> Tuple[Submission, Dict[str, str]]:
  """Fills predicted-empty unknown tiles next to salt crossing a tile border (SPEC 8.3 step 4).

  4a sources: non-empty known tiles that are not full-vertical; 4b sources: non-empty unknown tiles. 4a masks
  win over 4b masks. Returns (new masks, {changed id: "smooth_train" | "smooth_test"}).
  """
  train_src = [i for i in mos.in_mosaics(known, max_mosaic_id)
               if known[i].any() and not is_full_vertical(known[i])]
  test_src = [i for i in mos.in_mosaics(unknown, max_mosaic_id) if unknown[i].any()]
  scoped = unknown.select(mos.in_mosaics(unknown, max_mosaic_id))
  rec_a = boundary_keys(mos, train_src, known, scoped)
  rec_b = boundary_keys(mos, test_src, unknown, scoped)
  pad_keys(mos, rec_a, scoped)
  pad_keys(mos, rec_b, scoped)
  new, changed = {}, {}
  for rec, synth, name in ((rec_b, synthesize_test_driven, "smooth_test"),
                           (rec_a, synthesize_train_driven, "smooth_train")):
    for t, keys in rec.items():
      mask = synth(keys)
      if mask is not None:
        new[t] = mask
        changed[t] = name
  return unknown.replace(new), changed


# ------------------------------------------------------------------------------------------------- chain
STEPS = ("vertical", "empty", "smooth")


@dataclasses.dataclass
class RuleResult:
  """Submission after each step (`stages["input"]`, `stages["vertical"]`, ...) and the ids each step
  changed."""
  stages: Dict[str, Submission]
  changed: Dict[str, Dict[str, str]]


def apply_rules(mosaics: pd.DataFrame, known: Masks, unknown: Submission, steps: Iterable[str] = STEPS,
                max_mosaic_id: Optional[int] = MAX_MOSAIC_ID) -> RuleResult:
  """Runs the rules in the given order (default vertical -> empty -> smooth), each on the previous output."""
  mos = mosaics if isinstance(mosaics, MosaicIndex) else MosaicIndex(mosaics)
  stages = {"input": unknown}
  changed = {}
  cur = unknown
  for step in steps:
    if step == "vertical":
      cur, ch = apply_vertical(mos, known, cur)
    elif step == "empty":
      cur, ch = apply_empty(mos, known, cur, max_mosaic_id)
    elif step == "smooth":
      cur, ch = apply_smooth(mos, known, cur, max_mosaic_id)
    else:
      raise ValueError(f"unknown rule step {plain(step)!r}; choose from {', '.join(STEPS)}")
    stages[step] = cur
    changed[step] = ch
  return RuleResult(stages=stages, changed=changed)
