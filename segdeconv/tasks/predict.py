"""``predict_files(cfg)``: the predict CLI — class maps for a folder or a file, never touching inputs.

Writes, per input image ``<name>.<ext>``: ``index/<name>.png`` (palette 'P' PNG whose pixel values
are the class ids, VOC-style; 255 = ignore colour), ``color/<name>.png`` (RGB) and
``overlay/<name>.png`` (the colours blended over the photo); with Monte-Carlo dropout (``mc_samples=N``)
also ``uncertainty/<name>.png`` (8-bit grayscale, :func:`~segdeconv.inference.montecarlo.uncertainty_image`:
``uncertainty_map`` = entropy / log C or variance / ((C-1)/C²), × 255). Sub-folders of the input are
mirrored with ``recursive=true``. Unreadable files (broken symbolic links included) are skipped with a
warning and listed at the end. Where it may write: :func:`segdeconv.engine.outputs.check_output_dir`.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from segdeconv.data.image import IMAGE_SUFFIXES, list_images
from segdeconv.engine.logger import progress
from segdeconv.engine.outputs import check_output_dir
from segdeconv.engine.runtime import resolve_device
from segdeconv.engine.writer import write_image
from segdeconv.errors import UserError
from segdeconv.inference.montecarlo import check_measure, uncertainty_image
from segdeconv.inference.predictor import Predictor
from segdeconv.inference.quantize import check_quantize
from segdeconv.palette import palette_array

log = logging.getLogger("segdeconv")
KINDS = ("index", "color", "overlay", "uncertainty")


def collect_inputs(path: str, recursive: bool, key: str = "input") -> tuple[list[Path], Path, list[Path]]:
    """The input images, the folder they are named relative to, and the image names that cannot be
    read at all (dangling symlinks: skipped, but listed with the other skipped files); ``key`` is the
    config key the path came from (``input``, ``calibration``), for the messages."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{key}={path} does not exist; pass {key}=<image file or folder>")
    if p.is_file():
        return [p], p.parent, []
    files = list_images(p, recursive)
    entries = p.rglob("*") if recursive else p.iterdir()
    dangling = sorted(e for e in entries if e.suffix.lower() in IMAGE_SUFFIXES and e.is_symlink() and not e.exists())
    if not files:
        hint = "" if recursive else "; for images in sub-folders pass recursive=true"
        broken = f" ({len(dangling)} broken links, e.g. {dangling[0]})" if dangling else ""
        raise UserError(f"{key}={path} holds no readable images (*.png, *.jpg, …){broken}{hint}")
    return files, p, dangling


def output_names(inputs: Sequence[Path], root: Path) -> list[Path]:
    """Relative ``.png`` name per input; ``a.jpg`` + ``a.png`` become ``a.jpg.png`` + ``a.png.png``."""
    rel = [p.relative_to(root) for p in inputs]
    stems = Counter(r.with_suffix("") for r in rel)
    return [r.with_suffix(".png") if stems[r.with_suffix("")] == 1 else r.with_name(r.name + ".png") for r in rel]


def save_prediction(out: Path, name: Path, rgb: np.ndarray, mask: np.ndarray, p: Predictor,
                    kinds: Sequence[str], alpha: float, lut: np.ndarray,
                    uncertainty: Optional[np.ndarray] = None) -> None:
    """Write the requested kinds of ``mask`` (and the 8-bit ``uncertainty`` map) under ``out/<kind>/<name>``."""
    def uncertainty_png() -> Image.Image:
        if uncertainty is None:  # callers pass the map whenever kinds holds "uncertainty"
            raise ValueError("no uncertainty map to save")
        return Image.fromarray(uncertainty, mode="L")

    images = {
        "index": lambda: _palette_png(mask, lut),
        "color": lambda: Image.fromarray(p.colorize(mask)),
        "overlay": lambda: Image.fromarray(p.overlay(rgb, mask, alpha)),
        "uncertainty": uncertainty_png,
    }
    for kind in kinds:
        write_image(out / kind / name, images[kind](), "prediction")  # the one writer: never over a device


def _palette_png(mask: np.ndarray, lut: np.ndarray) -> Image.Image:
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(lut.reshape(-1).tolist())
    return im


def _kinds(save: Any, mc: bool) -> list[str]:
    if save is None:  # the default: every kind this run can make
        return list(KINDS) if mc else [k for k in KINDS if k != "uncertainty"]
    kinds = [str(k) for k in ([save] if isinstance(save, str) else list(save or []))]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise UserError(f"save={kinds} must be a non-empty subset of {list(KINDS)}")
    if "uncertainty" in kinds and not mc:
        raise UserError("save=[..., uncertainty] needs Monte-Carlo dropout: add mc_samples=N (a Bayesian SegNet "
                        "checkpoint) or drop uncertainty from save")
    return kinds


def _predictions(p: Predictor, sources: Any, batch_size: int, on_error: Any, measure: Optional[str]
                 ) -> Iterator[tuple[Any, np.ndarray, np.ndarray, Optional[np.ndarray]]]:
    """``(source, rgb, mask, 8-bit uncertainty map or None)``; the map only when ``measure`` is given."""
    if measure is None:
        for src, rgb, mask in p.iter_predict(sources, batch_size, on_error=on_error):
            yield src, rgb, mask, None
        return
    for src, rgb, res in p.iter_uncertainty(sources, batch_size, on_error=on_error):
        yield src, rgb, res["mask"], uncertainty_image(res, measure)


def predict_files(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image of ``cfg.input`` into ``cfg.output`` (see the module docstring)."""
    mc = cfg.get("mc_samples")
    check_quantize(cfg.get("quantize"))
    kinds = _kinds(cfg.save, mc is not None)
    measure = check_measure(str(cfg.get("uncertainty_map", "entropy"))) if "uncertainty" in kinds else None
    inputs, root, dangling = collect_inputs(str(cfg.input), bool(cfg.recursive))
    out = Path(str(cfg.output)).expanduser()
    names = output_names(inputs, root)
    check_output_dir(out, inputs, root, [Path(k) / n for k in kinds for n in names], bool(cfg.recursive))
    device = resolve_device(cfg.device, key="device")  # this rank's GPU under torchrun
    p = Predictor.from_checkpoint(cfg.ckpt_path, device, cfg.precision, cfg.get("tta"),
                                  cfg.get("sliding") if (cfg.get("sliding") or {}).get("window") else None,
                                  _size(cfg.input_size), cfg.get("crf"), bool(cfg.get("optimize", True)),
                                  mc, cfg.get("mc_seed", 0), cfg.get("quantize"),
                                  _calibration(cfg, inputs))
    if len(p.class_names) > 256:
        raise UserError(f"{len(p.class_names)} classes do not fit an 8-bit index PNG")
    lut, name_of = palette_array(p.palette), dict(zip(inputs, names))
    skipped: list[str] = []

    def skip(src: Any, err: UserError) -> None:
        skipped.append(str(src))
        msg = str(err).splitlines()[0]
        log.warning("skipping %s", msg if str(src) in msg else f"{src}: {msg}")

    for link in dangling:
        skip(link, UserError(f"{link} is a broken symbolic link (its target {os.readlink(link)} does not exist)"))
    done = 0
    _quiet_decoder()  # unreadable files get our one-line warning, not OpenCV's decoder log
    bar = progress(inputs, bool(cfg.progress), "predict")
    for src, rgb, mask, unc in _predictions(p, bar, int(cfg.batch_size), skip, measure):
        save_prediction(out, name_of[src], rgb, mask, p, kinds, float(cfg.alpha), lut, unc)
        done += 1
    bar.close()
    if not done:
        raise UserError(f"none of the {len(inputs) + len(dangling)} input files could be read (first: {skipped[0]})")
    print(f"predicted {done} image(s) into {out}/{{{','.join(kinds)}}}" +
          (f"; skipped {len(skipped)} unreadable: {', '.join(skipped[:5])}{' …' if len(skipped) > 5 else ''}"
           if skipped else ""))
    return {"predicted": done, "skipped": skipped, "output": str(out)}


def _calibration(cfg: DictConfig, inputs: Sequence[Path]) -> list[Path]:
    """int8 calibration images: ``calibration=<folder>``, else the first ``calibration_images`` inputs."""
    if not cfg.get("quantize"):
        return []
    n = int(cfg.get("calibration_images") or 16)
    folder = cfg.get("calibration")
    if folder is None:
        return list(inputs[:n])
    files, _, _ = collect_inputs(str(folder), False, "calibration")
    return files[:n]


def _quiet_decoder() -> None:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _size(spec: Any) -> Any:
    """``input_size`` from the command line: auto | train | native | [H, W]."""
    if spec is None or isinstance(spec, str):
        return spec
    return tuple(int(v) for v in spec)
