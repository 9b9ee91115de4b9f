"""The name of a run folder, checked wherever one is given: a spec's `name` (results/<name>) and compose's
prepare step (harness.run.prepare_results, which imports nothing heavy)."""

#: A spec's name and a run folder's: one path component, never `.` or `..`.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
