"""Foundations: architecture graphs, op primitives, data, files and locks, checks, progress, timing, processes."""
