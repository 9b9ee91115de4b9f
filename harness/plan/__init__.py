"""Where a cell is planned: a spec file read within its input guards and validated (schema), its devices resolved,
its matrix expanded into cells with their clocks, warm-ups and host capacity checked (spec), and a
largest-fitting search's probes and verdicts (resolve). Imports harness.record, devices and workloads; nothing here
runs a cell."""
