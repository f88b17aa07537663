"""Celery workers: the app and thin tasks over learnviz (built in the distributed issue)."""
