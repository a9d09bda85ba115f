"""The local demo: real models, real traffic, real metrics, the operator deciding."""
