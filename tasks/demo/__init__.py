"""Self-drawn demo data, so the pipeline can be shown and tested without licensed face images."""
