"""Moved to desktop/jobs/recovery.py (the outputs folder put in order at start); kept importable here."""
from .jobs.folder import lock_path, release_lock, try_lock  # noqa: F401
from .jobs.recovery import *  # noqa: F401,F403
from .jobs.recovery import INTERRUPTED_MESSAGE, Recovery, job_from_folder, recover_outputs  # noqa: F401
