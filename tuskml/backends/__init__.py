"""Inference engines (SparseEngine) that turn trained models into code for hardware targets."""
