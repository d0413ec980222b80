"""Rules across config keys and against degenerate values: the second half of
:func:`segdeconv.config.check_config`, run before anything is built (the first half checks each key's
type and range against :data:`segdeconv.schema.KNOBS`).

Each rule names the keys involved and the fix: values that pass one key at a time but cannot work
together (``loss.ignore_index`` ≠ the data's void label; DeconvNet's 1×1 BatchNorm at batch 1), or that
would run without doing what was asked (loss weights all 0; an empty path, e.g. an unset shell variable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from segdeconv.errors import ConfigError


def check_rules(cfg: DictConfig, get: Callable[[str], Any]) -> None:
    """Every rule that applies to ``cfg`` (``get(key)``: the value, None when absent or unset)."""
    if "trainer" not in cfg:  # the rules below concern training runs
        return
    check_ignore_index(get)
    check_batch_norm_batch(get)
    check_loss_weights(get)
    check_trackers(cfg, get)


def check_empty_path(key: str, value: Any) -> None:
    """An empty string where a file or folder is expected (``key=$UNSET``) is refused, never "not given"."""
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{key} is empty (an unset shell variable?); pass {key}=<path>, or {key}=null to leave it "
                          f"unset")


def check_ignore_index(get: Callable[[str], Any]) -> None:
    """The loss must ignore the data's void label when that label is no class: otherwise every void pixel is
    a target outside 0…C-1 (``IndexError: Target 255 is out of bounds`` at step 1)."""
    loss, data, n = get("loss.ignore_index"), get("dataset.ignore_index"), get("dataset.num_classes")
    if not all(isinstance(v, int) for v in (loss, data, n)) or loss == data or data < n:
        return
    raise ConfigError(f"loss.ignore_index={loss} but the data's void label is dataset.ignore_index={data}, which is no "
                      f"class (0…{n - 1}): the loss would get {data} as a target; drop the loss.ignore_index override "
                      f"(it follows dataset.ignore_index), or relabel the data")


def check_batch_norm_batch(get: Callable[[str], Any]) -> None:
    """DeconvNet's fc6/fc7 BatchNorm sees one value per channel when its map is 1×1 (a 224-px crop, 193 with
    ceil-mode pools): a batch of 1 cannot be normalised in training."""
    from segdeconv.models.validate import pooled_size

    size, batch = get("dataset.image_size"), get("dataset.batch_size")
    if get("model.name") != "deconvnet" or batch != 1 or get("model.encoder.batch_norm") is False:
        return
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return
    stages, ceil = get("model.encoder.num_stages") or 5, get("model.encoder.ceil_mode") is not False
    fc = [pooled_size(v, int(stages), ceil) - 6 for v in size]  # fc6: a 7×7 valid convolution
    if fc == [1, 1]:
        raise ConfigError(f"dataset.batch_size=1 with model=deconvnet at dataset.image_size={size}: fc6/fc7 are 1×1 "
                          f"maps, and BatchNorm cannot normalise one value per channel; use dataset.batch_size ≥ 2 "
                          f"(trainer.accumulate_grad_batches keeps the effective batch) or larger images")


def check_loss_weights(get: Callable[[str], Any]) -> None:
    """Weights that zero the whole loss train nothing (loss 0, exit 0): refused."""
    for key in ("loss.criterion.weights", "loss.class_weights"):
        w = get(key)
        if isinstance(w, list) and w and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w) \
                and not any(v > 0 for v in w):
            raise ConfigError(f"{key}={w} are all 0: the loss would be 0 and nothing would train; give at least one "
                              f"positive weight")


def check_trackers(cfg: DictConfig, get: Callable[[str], Any]) -> None:
    """The experiment trackers' settings (:mod:`segdeconv.engine.tracker_checks`), before any is opened."""
    from segdeconv.engine.tracker_checks import check_loggers
    from segdeconv.engine.trackers import logger_spec

    node = cfg.get("logger")
    if node is None:
        return
    spec = logger_spec({"logger": OmegaConf.to_container(node, resolve=True)})
    check_loggers(spec, _out_dir(get), bool(get("trainer.resume")))


def _out_dir(get: Callable[[str], Any]) -> Optional[Path]:
    out = get("output_dir")
    return Path(out) if isinstance(out, str) else None
