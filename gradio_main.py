"""Thin launcher of the Trellis Desktop UI: `python gradio_main.py [options]` = `python -m desktop ui [options]`."""
import sys

from desktop.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["ui", *sys.argv[1:]]))
