"""Triton kernels, installed as cmrvsr_fast.kernels: the channels-last kernels of the two fused ops
(cmrvsr_fast/ops), one file each, and the tiles they share (conv_tiles.py)."""
