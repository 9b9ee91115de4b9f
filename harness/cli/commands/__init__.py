"""One module per `edgebench` subcommand, each with HELP, add_arguments(parser) and handle(args) -> int."""
