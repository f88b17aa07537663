"""The periodic checkpoint scan and its schedule.

`learnviz beat` (or `celery -A workers beat`) sends one `scan_checkpoints` message every
`scan_interval` seconds; a CPU worker runs it (`beat.scan.scan`): every complete checkpoint whose
archive lacks a stage is enqueued, once.
"""
