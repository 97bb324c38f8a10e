"""The `tokenq` command-line interface."""
