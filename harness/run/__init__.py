"""Where a cell runs: the run loop (matrix: resolve, schedule, re-resolve after a kill at the cap), the
scheduler that shares the host among cells, the executors that start each cell under its device's caps (local,
docker, ray) and what they need of the host (cell users, reach, the harness user, the Docker engine). Imports
harness.plan, harness.record, devices and workloads; kept import-free for compose's lean prepare step."""
