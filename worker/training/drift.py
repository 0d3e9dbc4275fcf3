"""The drift score of training validation is `evaluation.drift` (shared with `worldplay eval`)."""

from evaluation.drift import chunk_bounds, chunk_histograms, drift_curve, drift_score

__all__ = ["chunk_bounds", "chunk_histograms", "drift_curve", "drift_score"]
