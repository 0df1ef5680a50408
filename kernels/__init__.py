"""Triton kernels, installed as cmrvsr_fast.kernels (see DESIGN.md: one file per fused op)."""
