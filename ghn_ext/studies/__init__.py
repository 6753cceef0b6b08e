"""Correlation studies: ground truth, predictors against it, ablations, top-k comparisons."""
