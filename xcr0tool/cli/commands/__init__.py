"""One module per command; cli.py only gathers them."""
