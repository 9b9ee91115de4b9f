"""The harness, one subpackage per stage (docs/architecture.md): plan (spec -> cells), run (scheduler and
executors), record (records and their store), and cli (`edgebench`) on top."""
