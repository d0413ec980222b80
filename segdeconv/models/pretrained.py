"""ImageNet VGG weights for :class:`~segdeconv.models.vgg.VGGEncoder` (``model.encoder.weights``); never downloaded.

``model.encoder.weights`` is one of

* a local torchvision state dict in either layout, told apart by its ``features.N`` keys and shapes:
  ``vgg*`` (conv, ReLU, …, pool: VGG without BatchNorm, Simonyan & Zisserman 2015 — what both
  originals start from: DeconvNet loads ``VGG_ILSVRC_16_layers_conv.caffemodel``, SegNet puts fresh
  BN after VGG16's 13 convs) or ``vgg*_bn`` (conv, BN, ReLU, …: the BN layers load too);
* ``imagenet`` / ``imagenet_bn``: torchvision's file for the encoder's arch, looked up offline where
  ``torchvision.models.vgg16(weights=…)`` caches it: ``torch.hub.get_dir()/checkpoints``
  (``$TORCH_HOME/hub/checkpoints``).

A plain ``vgg*`` file loads the convolutions only: a BN encoder keeps its own, fresh BN (scale 1,
shift 0, running mean 0 / var 1, as pytorch-semseg's ``init_vgg16_params``) and records
``pretrained_bn=False``: BN that ``init: paper`` should give the prototxts' shift (0.001). torchvision's
``features.N`` indices differ between the layouts (vgg16: conv1_2 is ``features.2``; vgg16_bn:
``features.3``), so convolutions are matched by order, after the file's layout is recognised.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import NamedTuple, Optional, Protocol, Union

import torch
from torch import Tensor, nn

from segdeconv import filekind
from segdeconv.errors import CheckpointError, ConfigError


class VGGEncoder(Protocol):
    """What loading reads of an encoder (:class:`segdeconv.models.vgg.VGGEncoder`; named structurally here,
    since vgg.py imports this module)."""

    arch: str
    batch_norm: bool
    width: float
    features: nn.Sequential

log = logging.getLogger(__name__)

KEY = "model.encoder.weights"
URL = "https://download.pytorch.org/models/"  # torchvision/models/vgg.py: VGG*_Weights.IMAGENET1K_V1
# torchvision.models.vgg.cfgs ("A", "B", "D", "E"): output channels per conv, "M" = max-pool.
TORCHVISION_CFGS: dict[str, list[Union[int, str]]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# (arch, batch_norm) -> torchvision's ImageNet file (the basename of its URL, as the hub cache names it).
IMAGENET_FILES: dict[tuple[str, bool], str] = {
    ("vgg11", False): "vgg11-8a719046.pth", ("vgg11", True): "vgg11_bn-6002323d.pth",
    ("vgg13", False): "vgg13-19584684.pth", ("vgg13", True): "vgg13_bn-abd245e5.pth",
    ("vgg16", False): "vgg16-397923af.pth", ("vgg16", True): "vgg16_bn-6c64b313.pth",
}
SPECS = {"imagenet": False, "imagenet_bn": True}  # weights=<spec> -> the file has BatchNorm
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class Layout(NamedTuple):
    """A torchvision VGG ``features`` layout: ``vgg16`` or, with BatchNorm, ``vgg16_bn``."""

    arch: str
    batch_norm: bool

    @property
    def name(self) -> str:
        return self.arch + ("_bn" if self.batch_norm else "")


def conv_indices(cfg: list[Union[int, str]], batch_norm: bool) -> list[int]:
    """``features.N`` index of every conv in torchvision's ``make_layers(cfg, batch_norm)``."""
    out, i = [], 0
    for v in cfg:
        if v != "M":
            out.append(i)
        i += 1 if v == "M" else 3 if batch_norm else 2
    return out


def hub_file(arch: str, batch_norm: bool) -> Path:
    """Where torchvision caches its ImageNet ``arch`` file: ``torch.hub.get_dir()/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[(arch, batch_norm)]


def resolve(weights: Union[str, Path], arch: str, batch_norm: bool, width: float) -> Path:
    """The existing file ``model.encoder.weights`` names (a path, or a spec looked up in the hub cache)."""
    spec = str(weights)
    if spec not in SPECS:
        path = Path(spec).expanduser()
        if not path.is_file():
            what = (f"a torchvision VGG state dict there ({IMAGENET_FILES[(arch, False)]} or "
                    f"{IMAGENET_FILES[(arch, True)]}), use {KEY}=imagenet or imagenet_bn (the torch hub cache)"
                    if (arch, False) in IMAGENET_FILES else f"a state dict of this {arch} encoder there")
            raise CheckpointError(f"{KEY}={spec}: file not found. Nothing is downloaded: save {what}, "
                                  f"or set {KEY}=null")
        return path
    bn = SPECS[spec]
    if arch == "basic":
        raise ConfigError(f"{KEY}={spec}: SegNet-Basic (model.encoder.arch=basic, 7×7 filters) has no ImageNet "
                          f"weights; set {KEY}=null")
    if (arch, bn) not in IMAGENET_FILES:
        raise ConfigError(f"{KEY}={spec}: no torchvision ImageNet file for model.encoder.arch={arch}; set {KEY}=null")
    if bn and not batch_norm:
        raise ConfigError(f"{KEY}=imagenet_bn holds BatchNorm but model.encoder.batch_norm=false; "
                          f"set {KEY}=imagenet (plain {arch}) or model.encoder.batch_norm=true")
    if width != 1.0:
        raise ConfigError(f"{KEY}={spec} fits model.encoder.width=1.0 only (got {width}); "
                          f"set model.encoder.width=1.0 or {KEY}=null")
    path = hub_file(arch, bn)
    if not path.is_file():
        raise ConfigError(f"{KEY}={spec}: {path} not found; nothing is downloaded: place torchvision's {path.name} "
                          f"there (from {URL}{path.name}; TORCH_HOME moves the directory) or set {KEY}=null")
    return path


def read_state(path: Path, where: str) -> dict[str, Tensor]:
    """The tensors of a torch state dict file, loaded without executing code; clear errors for anything else."""
    kind = filekind.file_kind(path)  # by signature (segdeconv.filekind), as checkpoints are
    if kind not in filekind.LOADABLE and kind != filekind.BROKEN_ZIP:
        raise CheckpointError(_not_torch(path, kind, where))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == filekind.TORCH)
    except pickle.UnpicklingError:  # the weights-only unpickler met a class (e.g. a whole pickled model)
        raise CheckpointError(f"{where} cannot be read as a state dict: it pickles Python objects (a whole "
                              f"model?), which are never unpickled; save the tensors: torch.save(model."
                              f"state_dict(), path)") from None
    except Exception as e:  # truncated or corrupt
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{where} cannot be read ({type(e).__name__}: {line}); the file is truncated or "
                              f"corrupt: copy it again") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} is not a state dict (it holds a {type(state).__name__}); "
                              f"save one with torch.save(model.state_dict(), path)")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def _not_torch(path: Path, kind: str, where: str) -> str:
    """Caffe's ``.caffemodel`` (a protobuf ``NetParameter``) or any other non-torch file (its kind)."""
    if kind == filekind.CAFFE:
        return (f"{where} is a Caffe model; convert it to a torchvision state dict (features.N.weight/.bias as in "
                f"torchvision.models.vgg16().state_dict(), saved with torch.save; Caffe's VGG takes BGR 0–255 input: "
                f"model.input=caffe_bgr*) or use {KEY}=imagenet (torchvision's file, from the torch hub cache)")
    return (f"{where} cannot be read: {filekind.describe(path, kind)}; pass a torchvision VGG state dict, "
            f"or {KEY}=imagenet")


def detect(feats: dict[str, Tensor]) -> Optional[Layout]:
    """The torchvision layout of ``features.*`` tensors (keys without ``features.``), if it is one."""
    idx = sorted(int(k[:-7]) for k, v in feats.items() if k.endswith(".weight") and k[:-7].isdigit() and v.dim() == 4)
    bn = any(k.endswith(".running_mean") for k in feats)
    chs = [feats[f"{i}.weight"].shape[0] for i in idx]
    for arch, cfg in TORCHVISION_CFGS.items():
        if chs == [v for v in cfg if v != "M"] and idx == conv_indices(cfg, bn):
            return Layout(arch, bn)
    return None


def read_weights(weights: Union[str, Path], encoder: VGGEncoder) -> tuple[dict[str, Tensor], str]:
    """The state dict ``model.encoder.weights`` names for ``encoder``, and how to name it in messages."""
    path = resolve(weights, encoder.arch, encoder.batch_norm, encoder.width)
    where = f"{KEY}={weights}" + (f" ({path})" if str(weights) in SPECS else "")
    return read_state(path, where), where


def load_encoder(encoder: VGGEncoder, weights: Union[str, Path]) -> Optional[Layout]:
    """Load ``encoder.features`` from ``weights``; the torchvision layout found (``None``: the file had the
    encoder's own keys and shapes, e.g. one saved from a narrower encoder). Logs what was loaded."""
    state, where = read_weights(weights, encoder)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise CheckpointError(f"{where}: no 'features.*' keys; expected a torchvision VGG state dict "
                              f"(e.g. vgg16-397923af.pth or vgg16_bn-6c64b313.pth)")
    layout = detect(feats)
    if layout is None:
        encoder.features.load_state_dict(_by_name(feats, encoder, where))
        log.info("%s: loaded by name (the encoder's own layout)", where)
        return None
    _check_fits(layout, encoder, where)
    encoder.features.load_state_dict(_mapped(feats, layout, encoder, where))
    n_file, n_own = len(conv_indices(TORCHVISION_CFGS[layout.arch], False)), len(_convs(encoder))
    convs = f"{n_own} of {n_file} convs" if n_own < n_file else f"{n_own} convs"
    bn = (" + BatchNorm" if layout.batch_norm else
          "; BatchNorm fresh (scale 1, shift 0, running mean 0, var 1)" if encoder.batch_norm else "")
    log.info("%s: torchvision %s layout loaded: %s%s", where, layout.name, convs, bn)
    return layout


def _convs(encoder: VGGEncoder) -> list[int]:
    return [i for i, m in enumerate(encoder.features) if isinstance(m, nn.Conv2d)]


def _check_fits(layout: Layout, encoder: VGGEncoder, where: str) -> None:
    """One-line errors for a torchvision file the encoder cannot take: other arch, BN into no-BN, width ≠ 1."""
    arch = encoder.arch
    held = f"{where} holds torchvision's {layout.name} layout"
    if arch == "basic":
        raise CheckpointError(f"{held}; SegNet-Basic (model.encoder.arch=basic) has no ImageNet weights: "
                              f"set {KEY}=null")
    if layout.arch != arch:
        raise CheckpointError(f"{held}, which does not fit model.encoder.arch={arch}; pass {arch}'s file "
                              f"({IMAGENET_FILES.get((arch, False))}) or {KEY}=null")
    if layout.batch_norm and not encoder.batch_norm:
        raise CheckpointError(f"{held} (with BatchNorm) but model.encoder.batch_norm=false; set "
                              f"model.encoder.batch_norm=true or pass {IMAGENET_FILES[(arch, False)]}")
    if encoder.width != 1.0:
        raise CheckpointError(f"{held}, which fits model.encoder.width=1.0 only (got {encoder.width}); "
                              f"set model.encoder.width=1.0 or {KEY}=null")


def _mapped(feats: dict[str, Tensor], layout: Layout, encoder: VGGEncoder, where: str) -> dict[str, Tensor]:
    """``encoder.features``' state with the file's convs (and BN, from a ``_bn`` file) matched by order."""
    own = encoder.features.state_dict()
    convs = list(zip(conv_indices(TORCHVISION_CFGS[layout.arch], layout.batch_norm), _convs(encoder)))
    pairs = [(s, d, p) for s, d in convs for p in ("weight", "bias")]
    if layout.batch_norm:  # BN right after its conv in both layouts
        pairs += [(s + 1, d + 1, p) for s, d in convs for p in BN_KEYS]
    out = dict(own)
    for s, d, p in pairs:
        src, dst = f"{s}.{p}", f"{d}.{p}"
        if src not in feats and p == "num_batches_tracked":
            continue  # torchvision's *_bn files predate it (PyTorch 0.4.1): keep the fresh 0
        got = tuple(feats[src].shape) if src in feats else "missing"
        if got != tuple(own[dst].shape):
            raise CheckpointError(f"{where} does not fit the encoder (features.{src}: file {got} vs model "
                                  f"features.{dst} {tuple(own[dst].shape)}); pass a torchvision {encoder.arch} file")
        out[dst] = feats[src]
    return out


def _by_name(feats: dict[str, Tensor], encoder: VGGEncoder, where: str) -> dict[str, Tensor]:
    """The encoder's keys from a file that is no torchvision layout (same names and shapes, or an error)."""
    own = encoder.features.state_dict()
    bad = [k for k in own if k not in feats or feats[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        got = tuple(feats[k].shape) if k in feats else "missing"
        raise CheckpointError(
            f"{where} does not fit encoder arch={encoder.arch} batch_norm={encoder.batch_norm} width={encoder.width} "
            f"(features.{k}: file {got} vs model {tuple(own[k].shape)}); pass a torchvision vgg11/13/16(_bn) state "
            f"dict with model.encoder.width=1.0, or one saved from this encoder")
    return {k: feats[k] for k in own}
