"""One model's training on one or more folds (train): the epochs' data order and compiled steps (epochs,
steps), the folds run together (foldgroup) and their per-epoch records (records). Validation runs
inference.tta's predictor, the one predict runs."""
