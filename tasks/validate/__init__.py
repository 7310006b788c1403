"""Validation: per-sketch metrics, dataset-level metrics, contracts, publishing."""
