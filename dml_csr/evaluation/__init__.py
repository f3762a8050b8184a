"""Scoring: the confusion matrix and its metrics, and the evaluation protocol (a model on a split, prediction files)."""
