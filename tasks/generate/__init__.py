"""Sketch generator: a conditional pixel-space diffusion UNet and its training loop.

Kept import-free so that listing tasks stays fast; torch and diffusers load only when
``tasks.generate.networks`` or ``tasks.generate.training`` is imported by the task that needs
them; checking a saved generator (``tasks.generate.saved``) needs neither.
"""
