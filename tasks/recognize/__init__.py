"""Sketch-to-mugshot recognizer training: margin-based classification heads and the projection
head that adapts frozen encoder vectors to sketches.

Submodules import torch; this package file does not, so listing or importing it stays cheap.
"""
