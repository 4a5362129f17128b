"""Command-line tools of the library (tiny pipeline generator, ...)."""
