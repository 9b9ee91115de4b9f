"""The top layer: the `edgebench` command line (main) and one thin module per subcommand (commands) that parses its
arguments and calls the library (harness.run, harness.plan, harness.record, reports). The only package that
imports reports."""
