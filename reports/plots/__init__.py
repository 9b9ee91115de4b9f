"""The report's plots: one module per plot family, the shared figure plumbing and marks beside them."""
