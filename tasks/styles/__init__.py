"""Sketch styles: deterministic renderers that turn aligned face photos into sketch targets."""
