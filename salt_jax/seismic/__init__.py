"""Whole seismic sections rather than 101x101 tiles: the window arithmetic (sections), section files in
and out (files), the snapshots' vote on stacks of sections (infer), SEG-Y volumes (segy), volumes in
chunks, bounded memory and resumable (volume), chunks as Dask tasks (distribute) and the command
(segment)."""
