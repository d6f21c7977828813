"""One module per `runner` command: argument handling and output, no show logic."""
