"""Analysis: pure check evaluation here and in `evaluate`; metric providers do the I/O."""
