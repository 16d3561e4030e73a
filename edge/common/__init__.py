"""Infrastructure the appliance, the hub and the tools share, written once.

The modules here are leaves: they import nothing of ``edge`` but :mod:`edge.errors`,
so that any package may use them without an import cycle.
"""
