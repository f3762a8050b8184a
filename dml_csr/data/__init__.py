"""Datasets, label registry, transforms and edge targets."""
