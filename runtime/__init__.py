"""What a process runs with: settings, stores, the publisher and the clock, built once.

Imports only ``scheduler`` and ``stores`` (plus Celery and kombu): tasks, workers,
ingest and the command line import this, never the other way round.
"""
