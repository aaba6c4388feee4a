"""Primitives every layer uses: the corner-aligned output grid, intensity normalisation, resampling kernels (spline,
Lanczos) and the degradation operators that simulate acquisitions (area averaging, slice profiles, k-space)."""
