"""Batches: `python -m desktop batch INPUT -o OUT`, thousands of assets over every GPU of a machine or of a
Ray cluster, resumable. An item is an image, a prompt, or a new look of the user's own mesh (a list's `mesh` and
`image` columns; its `model_family` picks TRELLIS v1's colour or TRELLIS.2's PBR materials), each the app's job.

    items.py      INPUT (folder, glob, .csv, .jsonl) -> items with stable names and per-item settings
    manifest.py   OUT/manifest.jsonl and the item folders: resume, exactly-once landing (one rename)
    overlap.py    two items side by side: one item's files written while the next one samples
    worker.py     ItemWorker: an item is the app's job (its steps, context, settings.json); pipelines loaded once
    local.py      one worker process per GPU of this machine
    ray_pool.py   one Ray actor per GPU of a cluster (imported only with --ray; Ray is optional)
    driver.py     what is left to make, and the loop: hand out, retry, record
    display.py    progress line and summary table
    command.py    the command line

Nothing here is imported by the app (ui, api, generate); nothing heavy is imported before the options
are checked.
"""


def main(argv=None) -> int:
    from .command import main as command_main

    return command_main(argv)
