"""Inference: the fast Engine (engine), the Python entry point `load()` -> Upscaler (upscaler), and agreement with
the low-resolution input (consistency)."""
