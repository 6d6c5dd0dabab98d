"""Checks of a sampler's quality on a program: simulation-based calibration and predictive checks."""

from __future__ import annotations

__all__: list[str] = []
