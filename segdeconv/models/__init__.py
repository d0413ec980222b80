"""Encoder–decoder models whose decoders unpool with the encoder's max-pool switches."""
from segdeconv.models.bayesian import mc_dropout, mc_predict
from segdeconv.models.deconvnet import DeconvNet
from segdeconv.models.inputs import InputAdapter
from segdeconv.models.layers import Pool, Switches, Unpool
from segdeconv.models.registry import build, register_model
from segdeconv.models.segnet import SegNet, segnet_basic
from segdeconv.models.vgg import VGGEncoder

__all__ = ["DeconvNet", "SegNet", "segnet_basic", "VGGEncoder", "Pool", "Unpool", "Switches",
           "InputAdapter", "mc_dropout", "mc_predict", "build", "register_model"]
