"""Feira: actor-based commerce runtime on Ray."""
