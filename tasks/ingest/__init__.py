"""Ingestion: sources → decoded, detected, aligned faces, or quarantine rows."""
