"""Helpers the graph passes share (not passes): constant access, per-channel affine folds."""
