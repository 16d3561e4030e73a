"""Inference backends behind one small protocol (see :mod:`edge.runtimes.base`)."""
