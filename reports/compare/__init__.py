"""The CI gate: a run against a baseline run of the same spec."""
