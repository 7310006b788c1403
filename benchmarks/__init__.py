"""Benchmarks: each measures one stage or one claim of the README, on data found here.

Run one as a module from the repository root, ``.venv/bin/python -m benchmarks.NAME``
(``python benchmarks/NAME.py`` works too: the project, benchmarks included, is installed
editable). Modules without a ``main`` are what the benchmarks share: ``quality`` and
``held_out`` (the generator's judges and held-out draws), ``fuzzing`` (mutated image files and
manifests, also used by the ingest fuzz tests) and ``sketch_data`` (a small validated sketches
table without a trained generator, also used by the validate tests).
"""
