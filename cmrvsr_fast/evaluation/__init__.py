"""Evaluation: the paper's metrics (metrics), Table-1-style scoring of methods over a dataset (evaluate), and
grey-level montages for people (viz)."""
