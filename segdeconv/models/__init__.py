"""Encoder–decoder models whose decoders unpool with the encoder's max-pool switches."""
from segdeconv.models.deconvnet import DeconvNet
from segdeconv.models.layers import Pool, Switches, Unpool
from segdeconv.models.segnet import SegNet, segnet_basic
from segdeconv.models.vgg import VGGEncoder

__all__ = ["DeconvNet", "SegNet", "segnet_basic", "VGGEncoder", "Pool", "Unpool", "Switches"]
