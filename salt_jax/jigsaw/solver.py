"""Jigsaw solver: 2-NN edge matching, strips, connected components and mosaic placement (SPEC 8.2).

Pipeline (`solve`): descriptors (edges.py) -> for every tile, the 2 nearest neighbours of each extrapolated
edge among the opposite edges of all tiles (the tile itself included) -> kept "rows" (a, s) per direction
(best-match distance d1 < 10 and ratio-test confidence 1 - d1/d2 > 0.2 on both sides) -> strips (maximal
unambiguous chains) -> connected components of the undirected edge graph -> one mosaic per large component,
placed by a BFS over the strips through its smallest tile index. x grows to the right, y downward.

Faithful by default; repairs are opt-in keyword arguments (and CLI flags):
* `mutual=True`: keep a vertical row (a, b) only if b is a's best "below" match (b == s), i.e. a and s are
  mutual nearest neighbours; this also removes the duplicated rows that stop strip walks. The original has no
  mutual-nearest check (SPEC 10.21).
* `check_collisions=True`: a tile whose cell is already occupied in its mosaic is not placed there (it may
  still be placed later from another strip at a free cell). The original never checks (two tiles can share a
  cell; the rules then see the first one).
* `n_mosaics=None`: every component with >= 2 tiles becomes a mosaic instead of the hard-coded 514 largest.
* `mark_seed=True`: mark each strip-walk seed as visited (the original forgets to, so a seed can end up in a
  second strip; "last strip wins" in the lookup).
Other differences: the kNN is an exact brute-force search (float32 candidates, float64 re-ranking) unless
`knn="kdtree"`; both give the same neighbours up to ties between equal distances. Components of equal size
are ordered by their smallest tile index (SPEC 8.2).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

from salt_jax.jigsaw import edges as edges_lib

DISSIMILARITY_THRESHOLD = 10.0  # d1 < 10 <=> Pearson r > 0.5 (SPEC 8.1 `Disimi_Threshold`)
COMPATIBILITY_THRESHOLD = 0.2  # 1 - d1/d2 > 0.2 (SPEC 8.1 `Compa_Threshold`)
N_MOSAICS = 514  # hard-coded mosaic count of the original (SPEC 8.2)


@dataclasses.dataclass(frozen=True)
class Matches:
  """Best two matches of one edge query for every tile: idx (N,) int, d1 <= d2 (N,), conf = 1 - d1/d2."""
  idx: np.ndarray
  d1: np.ndarray
  d2: np.ndarray

  @property
  def conf(self) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
      return 1.0 - self.d1 / self.d2  # 0/0 (identical blank tiles) -> NaN, which fails every threshold


def _rerank(queries: np.ndarray, base: np.ndarray, cand: np.ndarray) -> Matches:
  """Exact float64 distances to the (N,k) candidates; best two, ties -> smaller index."""
  exact = np.sqrt(((queries[:, None, :] - base[cand]) ** 2).sum(-1))
  order = np.lexsort((cand, exact), axis=1)[:, :2]
  idx = np.take_along_axis(cand, order, 1)
  dist = np.take_along_axis(exact, order, 1)
  return Matches(idx=idx[:, 0], d1=dist[:, 0], d2=dist[:, 1])


def _smallest(d: np.ndarray, k: int, axis: int) -> Tuple[np.ndarray, np.ndarray]:
  """Indices and values of the k smallest entries along `axis` of a 2-D array (overwrites d)."""
  idx, val = [], []
  other = np.arange(d.shape[1 - axis])
  for _ in range(k):
    i = np.argmin(d, axis=axis)
    sel = (other, i) if axis == 1 else (i, other)
    val.append(d[sel].copy())
    idx.append(i)
    d[sel] = np.inf
  return np.stack(idx, axis), np.stack(val, axis)


def knn2_pair(x: np.ndarray, y: np.ndarray, chunk: int = 1024, n_candidates: int = 3
              ) -> Tuple[Matches, Matches]:
  """Two nearest rows of y for each row of x, and of x for each row of y, from one distance matrix.

  Exact brute force: float32 matmul distances select `n_candidates` candidates per query, which are re-ranked
  with float64 distances (ties -> smaller index). Both directions share the (N,M) matrix, computed in chunks.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  k = min(n_candidates, len(x), len(y))
  # [x, 1] . [-2y, |y|^2] = |y|^2 - 2 x.y: row-wise squared distance up to the constant |x|^2.
  xa = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float32)
  ya = np.concatenate([-2.0 * y, (y * y).sum(1, keepdims=True)], 1).astype(np.float32)
  row_cand = np.empty((len(x), k), np.int64)
  col_idx, col_val = [], []
  # [-2y, 1] . [x, |x|^2] = |x|^2 - 2 x.y for the transposed search (a second matmul beats a transpose).
  xb = np.concatenate([x, (x * x).sum(1, keepdims=True)], 1).astype(np.float32)
  yb = np.concatenate([-2.0 * y, np.ones((len(y), 1))], 1).astype(np.float32)
  buf = np.empty((min(chunk, len(x)), len(y)), np.float32)
  buf_t = np.empty((len(y), min(chunk, len(x))), np.float32)
  for start in range(0, len(x), chunk):
    c = min(chunk, len(x) - start)
    d = buf[:c]
    np.matmul(xa[start:start + c], ya.T, out=d)
    dt = buf_t[:, :c] if c == buf_t.shape[1] else np.empty((len(y), c), np.float32)
    np.matmul(yb, xb[start:start + c].T, out=dt)  # (M,c) = |x|^2 - 2 x.y: column-wise search as row-wise
    row_cand[start:start + c] = _smallest(d, k, 1)[0]
    i, v = _smallest(dt, k, 1)
    col_idx.append(i.T + start)
    col_val.append(v.T)
  col_idx, col_val = np.concatenate(col_idx), np.concatenate(col_val)  # (k * n_chunks, M)
  best = np.argpartition(col_val, k - 1, axis=0)[:k]
  col_cand = np.take_along_axis(col_idx, best, 0).T
  return _rerank(x, y, row_cand), _rerank(y, x, np.ascontiguousarray(col_cand))


def knn2(queries: np.ndarray, base: np.ndarray, knn: str = "brute") -> Matches:
  """Two nearest rows of `base` (M,D) for each row of `queries` (N,D), Euclidean.

  "brute": exact chunked search (see knn2_pair). "kdtree": scipy cKDTree (the original's method; slow in 101
  dimensions).
  """
  if knn == "kdtree":
    from scipy.spatial import cKDTree  # pylint: disable=import-outside-toplevel
    d, i = cKDTree(np.asarray(base, np.float64)).query(np.asarray(queries, np.float64), k=2)
    return Matches(idx=i[:, 0].astype(np.int64), d1=d[:, 0], d2=d[:, 1])
  if knn != "brute":
    raise ValueError(f"unknown knn method {knn!r}")
  return knn2_pair(queries, base)[0]


def match_all(desc: Dict[str, np.ndarray], knn: str = "brute") -> Dict[str, Matches]:
  """right/left/below/above matches of every tile (SPEC 8.1); "right" = candidate tile to the right of n."""
  if knn == "brute":
    right, left = knn2_pair(desc["right"], desc["left"])
    below, above = knn2_pair(desc["bottom"], desc["top"])
    return {"right": right, "left": left, "below": below, "above": above}
  return {
      "right": knn2(desc["right"], desc["left"], knn),
      "left": knn2(desc["left"], desc["right"], knn),
      "below": knn2(desc["bottom"], desc["top"], knn),
      "above": knn2(desc["top"], desc["bottom"], knn),
  }


def kept_rows(forward: Matches, backward: Matches, mutual: bool = False,
              dissimilarity: float = DISSIMILARITY_THRESHOLD,
              compatibility: float = COMPATIBILITY_THRESHOLD) -> Tuple[np.ndarray, np.ndarray]:
  """Rows (a, s) of one direction, with the original's multiplicity (SPEC 8.2).

  Vertical: forward = below, backward = above; horizontal: forward = left, backward = right. One row per tile
  b whose best backward match is a; s = a's best forward match. Kept if s != a, d1(a) < 10, conf(a) > 0.2,
  conf(b) > 0.2 (and s == b with `mutual`).
  Returns:
    a, s: (R,) int arrays; "s is directly below a" (vertical) / "directly left of a" (horizontal).
  """
  b = np.arange(len(backward.idx))
  a = backward.idx
  s = forward.idx[a]
  with np.errstate(invalid="ignore"):
    keep = (s != a) & (forward.d1[a] < dissimilarity) & (forward.conf[a] > compatibility)
    keep &= backward.conf > compatibility
  if mutual:
    keep &= s == b
  return a[keep], s[keep]


def walk_strips(a: np.ndarray, s: np.ndarray, n: int, mark_seed: bool = False) -> List[List[int]]:
  """Maximal unambiguous chains of the rows (a, s) (SPEC 8.2 strip walk).

  Forward steps follow a -> s while cur has exactly one row (multiplicity counts) and put the successor at the
  front; backward steps follow s -> a while exactly one row ends at cur and append the predecessor. Seeds run
  over 0..n-1; a seed already put into a strip is skipped. Strips of length 1 are dropped. Vertical strips
  come out bottom -> top, horizontal strips left -> right.
  """
  out_count = np.bincount(a, minlength=n)
  in_count = np.bincount(s, minlength=n)
  succ = np.full(n, -1, np.int64)
  succ[a] = s
  pred = np.full(n, -1, np.int64)
  pred[s] = a  # only read where in_count == 1, where it is the unique predecessor
  out_one = (out_count == 1).tolist()
  in_one = (in_count == 1).tolist()
  succ_l, pred_l = succ.tolist(), pred.tolist()
  marked = [False] * n
  strips = []
  for i in range(n):
    if marked[i] or not (out_one[i] or in_one[i]):
      continue
    members = {i}
    front, back = [], []
    cur = i
    while out_one[cur] and succ_l[cur] not in members:
      cur = succ_l[cur]
      front.append(cur)
      members.add(cur)
      marked[cur] = True
    cur = i
    while in_one[cur] and pred_l[cur] not in members:
      cur = pred_l[cur]
      back.append(cur)
      members.add(cur)
      marked[cur] = True
    if front or back:
      if mark_seed:
        marked[i] = True
      strips.append(front[::-1] + [i] + back)
  return strips


def strip_lookup(strips: List[List[int]], n: int) -> np.ndarray:
  """(n,) index of the strip containing each tile, -1 if none (the last strip wins)."""
  rc = np.full(n, -1, np.int64)
  for k, strip in enumerate(strips):
    rc[strip] = k
  return rc


def components(rows: List[Tuple[np.ndarray, np.ndarray]], n: int) -> List[np.ndarray]:
  """Connected components of the undirected graph of all rows, largest first (ties: smaller min index).

  Returns a list of sorted (k,) int arrays (singletons included).
  """
  a = np.concatenate([r[0] for r in rows])
  s = np.concatenate([r[1] for r in rows])
  graph = sparse.coo_matrix((np.ones(len(a), np.int8), (a, s)), shape=(n, n)).tocsr()
  _, labels = csgraph.connected_components(graph, directed=False)
  order = np.argsort(labels, kind="stable")  # members ascending within each label
  bounds = np.flatnonzero(np.diff(labels[order])) + 1
  groups = np.split(order, bounds)
  groups.sort(key=lambda g: (-len(g), int(g[0])))
  return groups


def assemble(seed: int, row_strips, col_strips, rc_row, rc_col,
             check_collisions: bool = False) -> Tuple[List[Tuple[int, int, int]], int]:
  """Places tiles reachable from `seed` through strips (SPEC 8.2 mosaic assembly).

  Returns ([(tile, x, y)] with min x = min y = 0 in placement order, number of rejected collisions).
  """
  tiles, xs, ys = [seed], [-1], [-1]
  placed = {seed}
  cells = {(-1, -1)}
  collisions = 0

  def add(u, x, y):
    nonlocal collisions
    if u in placed:
      return
    if check_collisions and (x, y) in cells:
      collisions += 1
      return
    placed.add(u)
    cells.add((x, y))
    tiles.append(u)
    xs.append(x)
    ys.append(y)

  j = 0
  while j < len(tiles):  # FIFO order == the original's repeated passes over not-done rows
    t, x0, y0 = tiles[j], xs[j], ys[j]
    if rc_row[t] >= 0:
      strip = row_strips[rc_row[t]]
      p = strip.index(t)
      for i, u in enumerate(strip):
        add(u, x0 - p + i, y0)
    if rc_col[t] >= 0:
      strip = col_strips[rc_col[t]][::-1]  # top -> bottom
      p = strip.index(t)
      for i, u in enumerate(strip):
        add(u, x0, y0 - p + i)
    j += 1
  mx, my = min(xs), min(ys)
  return [(t, x - mx, y - my) for t, x, y in zip(tiles, xs, ys)], collisions


@dataclasses.dataclass
class Solution:
  """Solver output: `table` has one row per placed tile (id, mosaic_id, x, y); `stats` counts things."""
  table: pd.DataFrame
  stats: Dict[str, int]


def solve_descriptors(desc: Dict[str, np.ndarray], ids, *, knn: str = "brute", mutual: bool = False,
                      check_collisions: bool = False, n_mosaics: Optional[int] = N_MOSAICS,
                      mark_seed: bool = False) -> Solution:
  """Full SPEC 8.2 pipeline from the four normalised descriptor matrices (N,101) and the (N,) ids."""
  ids = np.asarray(ids, dtype=object)
  n = len(ids)
  m = match_all(desc, knn)
  vert = kept_rows(m["below"], m["above"], mutual)
  horiz = kept_rows(m["left"], m["right"], mutual)
  col_strips = walk_strips(*vert, n, mark_seed)
  row_strips = walk_strips(*horiz, n, mark_seed)
  rc_col = strip_lookup(col_strips, n).tolist()
  rc_row = strip_lookup(row_strips, n).tolist()
  groups = components([vert, horiz], n)
  n_multi = sum(len(g) > 1 for g in groups)
  if n_mosaics is None:
    groups = [g for g in groups if len(g) > 1]
  else:
    groups = groups[:n_mosaics]
  recs, seen, collisions = [], set(), 0
  for mid, g in enumerate(groups):
    placed, c = assemble(int(g[0]), row_strips, col_strips, rc_row, rc_col, check_collisions)
    collisions += c
    for t, x, y in placed:
      if t not in seen:  # an id keeps its first mosaic (never triggers: mosaics lie in disjoint components)
        seen.add(t)
        recs.append((ids[t], mid, x, y))
  table = pd.DataFrame(recs, columns=["id", "mosaic_id", "x", "y"])
  stats = dict(n_tiles=n, vertical_rows=len(vert[0]), horizontal_rows=len(horiz[0]),
               column_strips=len(col_strips), row_strips=len(row_strips),
               multi_tile_components=n_multi, mosaics=len(groups),
               placed=len(table), collisions_rejected=collisions,
               largest=int(table.groupby("mosaic_id").size().max()) if len(table) else 0)
  return Solution(table=table, stats=stats)


def solve_images(images: np.ndarray, ids, **kwargs) -> Solution:
  """Solves a stack of (N,101,101) tiles (see `solve_descriptors` for options)."""
  return solve_descriptors(edges_lib.descriptors(images), ids, **kwargs)


def solve(tiles: edges_lib.TileSet, **kwargs) -> Solution:
  """Solves a TileSet (train tiles first, then test)."""
  return solve_images(tiles.images, tiles.ids, **kwargs)
