"""Celery workers: thin tasks that load a job's files, call one pipeline stage, and record the result."""
