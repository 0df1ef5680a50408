"""Training with the paper's recipe on one process or under torchrun (train)."""
