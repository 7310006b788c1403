"""Evaluation of sketch-to-mugshot matching: identification (CMC, rank-k) and verification
(ROC, TAR@FAR, EER) from a probe x gallery score matrix.

Kept free of torch so that scoring a run, or re-scoring stored embeddings, needs only numpy.
"""
