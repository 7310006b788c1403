"""Prefect flows and the CLI that runs them. Nothing imports a flow module but the CLI
and deployments; heavy libraries are imported inside the tasks the flows call."""
