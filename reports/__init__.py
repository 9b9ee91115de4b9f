"""Turning a run directory into something a person or CI can act on.

`reports.html.write_report` renders the self-contained HTML report (plots, headline, cells table,
system description) with its PNGs and cells.csv; `reports.compare.runs.compare_runs` matches two runs
cell by cell for `edgebench compare`. Nothing here runs workloads or imports torch.
"""
