"""Cardiac image heuristics: intensity windows (intensity), the heart box (roi), the cardiac phase code and ES
estimation (phase), and the few OpenCV operations they need, written in numpy/scipy (cvcompat)."""
