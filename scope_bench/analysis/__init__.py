"""Diversity, near-miss and training dynamics of runs (engine-free, no torch)."""
