"""See what a trained network responds to: Zeiler & Fergus (2014) projections and occlusion.

* :class:`Projector` — project one encoder activation ``(layer, channel, position)`` to pixel space
  with the encoder's own switches and filters (``method="deconvnet" | "guided_backprop" | "gradient"``).
* :func:`search_topk` / :func:`collect_tiles` — the top-k activations of chosen channels over a
  dataset split and their receptive-field projection / image-patch pairs (Z&F Fig. 2).
* :func:`class_evidence` — a class's logits over an output region projected back through the
  whole network (decoder, then encoder) to the pixels (Z&F §2.1).
* :func:`occlusion_map` — how much a class's mean probability over a region drops as a grey
  patch slides over the image (Z&F §4.2); :func:`heatmap` renders either map as RGB.
* :func:`switch_maps` / :func:`project_decoder_unit` — the decoder side: where each decoder stage
  unpools, and a decoder unit projected through decoder and encoder (:mod:`.decoder_maps`).
* :func:`feature_evolution` — the same units' top projections across a run's step checkpoints
  (Z&F Fig. 4, :mod:`.evolution`).
* :func:`image_maps` / :func:`write_explorer` — one image's prediction, uncertainty, class maps and
  per-pixel evidence, and the self-contained explorer page of such images (``explorer=true``).
* ``python visualize.py`` — the command-line tool (:func:`segdeconv.tasks.visualize.visualize`).
"""
from segdeconv.visualize.classmaps import ImageMaps, MapSettings, image_maps
from segdeconv.visualize.decoder_maps import project_decoder_unit, search_decoder_topk, switch_maps
from segdeconv.visualize.evidence import class_evidence
from segdeconv.visualize.evolution import evolution_figure, feature_evolution
from segdeconv.visualize.explorer import write_explorer
from segdeconv.visualize.geometry import plan_crop, receptive_box
from segdeconv.visualize.occlusion import occlusion_map, occlusion_maps
from segdeconv.visualize.projection import METHODS, Projection, Projector, reverse_relu
from segdeconv.visualize.render import heatmap
from segdeconv.visualize.topk import LayerTiles, TopK, collect_tiles, search_topk

__all__ = ["METHODS", "Projection", "Projector", "reverse_relu", "plan_crop", "receptive_box",
           "LayerTiles", "TopK", "collect_tiles", "search_topk", "class_evidence", "occlusion_map", "heatmap",
           "switch_maps", "project_decoder_unit", "search_decoder_topk", "feature_evolution", "evolution_figure",
           "ImageMaps", "MapSettings", "image_maps", "occlusion_maps", "write_explorer"]
