"""What a run leaves on disk and reads back: the workdir's layout, records and lock (rundir), and the orbax
states and per-cycle snapshots in it (checkpoints). Training, inference and the tools all use it."""
