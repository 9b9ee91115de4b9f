"""How a device profile's caps are imposed on one cell process.

A backend creates the cap (e.g. a child cgroup) before the cell starts, tells the launcher
(`python -m devices.launch`) what to join or set in the child before it execs the workload,
reads the peak and the OOM verdict afterwards, and always removes what it made.
Choose one with `devices.caps.select.choose_backend`.
"""
