"""Diagnostics recorded during training (not losses, not metrics): plots and summaries that help
to understand a run."""

from hashlab.diagnostics.triplet_diagram import TripletDiagram

__all__ = ["TripletDiagram"]
