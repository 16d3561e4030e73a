"""The engine bundle on disk: its manifest and careful file handling.

A leaf: both ``edge.runtimes`` and ``edge.engines`` import it, and it imports neither.
"""
