"""The periodic checkpoint scan (built in the distributed issue)."""
