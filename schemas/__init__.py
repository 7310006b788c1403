"""The shapes every stage agrees on: records, their Arrow schemas, parameters, settings."""
