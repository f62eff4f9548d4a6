"""Encoders, decoder blocks and the U-Net variants (SPEC 3)."""
