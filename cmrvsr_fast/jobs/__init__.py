"""Whole jobs behind the commands, as library functions: upscaling a folder, zip, file or NIfTI of cines into
derived series (upscale)."""
