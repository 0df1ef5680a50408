"""The package version, in a module of its own so that the I/O layer can stamp it without importing the model."""

__version__ = "0.1.0"
