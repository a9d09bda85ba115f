"""Deterministic fault simulation of the real control loop (see fakes.py, world.py, invariants.py)."""
