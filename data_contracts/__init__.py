"""Data contracts: great-expectations suites built in Python, and their thresholds.

Used by the validation stage only; importing this package does not import
great-expectations (it loads inside ``data_contracts.run``).
"""
