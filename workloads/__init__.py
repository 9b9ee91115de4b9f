"""What runs on a device: models, tasks, methods, the training loop of one cell, the memory model.

The cell interface is small on purpose: `workloads.params.WorkloadParams` describes a cell,
`python -m workloads.runner CELL.json` runs it and reports events (see workloads.runner).
Modules the harness imports in its own process (params, memory_model) must not import torch.
"""
