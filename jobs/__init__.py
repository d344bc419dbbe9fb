"""What the API and the workers share: settings, the job record and its state machine, the file store.

Nothing here imports Flask, Celery or the pipeline, so both sides (and the tests) can use it cheaply.
"""
from jobs.settings import Settings

__all__ = ["Settings"]
