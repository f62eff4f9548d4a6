"""Kaggle TGS data: strict loading (kaggle), RLE (rle), stratified k-fold split (folds), TFDS builder."""
from salt_jax.data.errors import DataError
from salt_jax.data.folds import coverage_class, fold_split, load_or_make_folds, make_folds
from salt_jax.data.kaggle import DataSource, Samples, load_split, load_test, load_train
from salt_jax.data.rle import rle_decode, rle_decode_many, rle_encode, rle_encode_many

__all__ = ["DataError", "DataSource", "Samples", "load_train", "load_test", "load_split", "rle_encode",
           "rle_decode", "rle_encode_many", "rle_decode_many", "coverage_class", "make_folds",
           "load_or_make_folds", "fold_split"]
