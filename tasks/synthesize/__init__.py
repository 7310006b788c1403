"""Synthetic mugshots: new, photo-realistic people drawn offline as a folder source.

``generator`` loads the MobileStyleGAN bundled in the ``random-face`` wheel with current
OpenVINO, ``hygiene`` decides which drawn faces become identities, ``shard`` draws one shard
of candidates (seeded, resumable), ``source`` turns the candidates into identity folders and
the manifest, ``rounds`` draws and judges rounds of candidates until N are kept. Plain
functions and thin task wrappers; the flow in flows/synthesize.py composes them.
"""
