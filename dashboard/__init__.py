"""The Flask dashboard over the archives (built in the dashboard issue)."""
