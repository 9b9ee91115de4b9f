"""How the matrix runs: spec -> cells -> executor -> records -> store, and the `edgebench` CLI."""
