"""Composition roots: the command line and the wiring of each command (serve, reclassify,
the offline commands)."""
