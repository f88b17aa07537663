"""The package's version, in a leaf module: archive.py stamps it into every archive, and a module
that imports the `learnviz` package itself for it would close an import cycle."""

__version__ = "0.1.0"
