"""One module per CLI subcommand (see lowbit/cli.py)."""
