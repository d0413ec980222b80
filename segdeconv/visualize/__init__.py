"""See what a trained encoder responds to: Zeiler & Fergus (2014) deconvnet projections.

* :class:`Projector` — project one activation ``(layer, channel, position)`` to pixel space with
  the encoder's own switches and filters (``method="deconvnet" | "guided_backprop" | "gradient"``).
* :func:`search_topk` / :func:`collect_tiles` — the top-k activations of chosen channels over a
  dataset split and their receptive-field projection / image-patch pairs (Z&F Fig. 2).
* ``python visualize.py`` — the command-line tool (:func:`segdeconv.tasks.visualize.visualize`).
"""
from segdeconv.visualize.deconvnet import METHODS, Projection, Projector, reverse_relu
from segdeconv.visualize.geometry import plan_crop, receptive_box
from segdeconv.visualize.topk import LayerTiles, TopK, collect_tiles, search_topk

__all__ = ["METHODS", "Projection", "Projector", "reverse_relu", "plan_crop", "receptive_box",
           "LayerTiles", "TopK", "collect_tiles", "search_topk"]
