"""Whole seismic sections rather than 101x101 tiles: the window arithmetic (sections), SEG-Y volumes
(segy) and the segmentation of sections and volumes with trained snapshots (segment)."""
