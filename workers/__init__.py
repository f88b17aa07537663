"""Celery workers: the app and thin tasks over learnviz (docs/distributed.md).

  celery.py    the app, its whole configuration built from learnviz's settings; routing by name
  tasks.py     collect_embeddings (gpu), analyze, update_learning_history, generate_visualizations,
               scan_checkpoints (cpu): unpack a path, call learnviz.pipeline, send what follows
  dispatch.py  the Redis marks that send each stage once, coalesce the history update and
               debounce the figures
  signals.py   worker name in the archives, heavy imports once per process
  consumer.py  Celery's consumer, made to survive a Redis restart
  cli.py       `learnviz worker|beat|submit`

Importing this package imports nothing heavy and reads no settings: `celery -A workers` builds the
app when it asks for `workers.celery.app`.
"""
