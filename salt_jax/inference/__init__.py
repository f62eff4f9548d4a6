"""Trained snapshots to masks: flip-TTA prediction over tile arrays (tta, also what validation runs),
per-snapshot prediction files (predict) with their empty-tile gates (gating), the vote of workdirs into a
submission (ensemble) and its per-coverage scores (breakdown). Imports nothing from training."""
