"""learnviz: see what a language model learns, checkpoint by checkpoint.

The core: plain functions and dataclasses. It imports neither celery nor flask; the adapters in
workers/, beat/ and dashboard/ import it.
"""

__version__ = "0.1.0"
