"""One declaration per knob (segdeconv/schema.py): the YAML, the checks, the engine's settings and the
resume policy are derived from it, and a key declared nowhere (or declared and used nowhere) fails here."""
from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Iterator

import pytest
from conftest import CONF, REPO, compose_cfg
from omegaconf import OmegaConf

from segdeconv.config import check_config
from segdeconv.engine.trainer import TrainSettings
from segdeconv.errors import ConfigError
from segdeconv.schema import FREE, KNOBS, REFUSE, WARN, default_yaml, reference_rows, resume_policy, section, section_values
from segdeconv.tasks.train import train_settings

GROUPS = ("model", "dataset", "loss", "optimizer", "scheduler")
# the run's own fields of TrainSettings (not trainer.* knobs)
RUN_FIELDS = {"out_dir", "batch_size", "val_batch_size", "num_workers", "ignore_index", "resume_command"}
# trainer.* knobs the train task reads itself (runtime, data), not the engine's loop
TASK_READS = {"precision", "device", "channels_last", "deterministic", "dist_timeout_s", "allow_val_in_train",
              "limit_train_images", "limit_val_images"}


def _compositions() -> Iterator[tuple[str, list[str]]]:
    for p in sorted((CONF / "experiment").glob("*.yaml")):
        yield "train", [f"experiment={p.stem}"]
    for group in GROUPS:
        for p in sorted((CONF / group).glob("*.yaml")):
            yield "train", [f"{group}={p.stem}"]
    for task in ("evaluate", "predict", "export", "visualize", "recompute_bn"):
        yield task, []
    yield "check_data", ["dataset=synthetic"]


def _leaves(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict) and d:
        for k, v in d.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, d


@pytest.fixture(scope="module")
def composed() -> list[tuple[str, str, dict]]:
    """``(task, overrides, config)`` for every experiment, every group option and every other task."""
    out = []
    for task, overrides in _compositions():
        cfg = OmegaConf.to_container(compose_cfg(overrides, task), resolve=False)
        cfg.pop("hydra", None)
        out.append((task, " ".join(overrides), cfg))
    return out


def test_the_trainer_yaml_is_the_one_the_schema_generates():
    on_disk = (CONF / "trainer" / "default.yaml").read_text()
    assert on_disk == default_yaml("trainer"), "run `python -m segdeconv.schema --write` after editing the table"


@pytest.mark.slow
def test_every_composed_value_has_a_schema_entry_and_every_entry_a_yaml_value(composed):
    """Scalars (numbers, flags, nulls) of every composition must be declared; ``_target_`` nodes, strings
    and lists the constructors check may be undeclared. No entry may be declared and composed nowhere."""
    undeclared, seen = set(), set()
    for task, overrides, cfg in composed:
        for key, value in _leaves(cfg):
            if key.startswith(("logger.", "debug.")) or key.rsplit(".", 1)[-1].startswith("_"):
                continue
            parts = key.split(".")  # a free-form node (kind object) covers its subtree
            hit = [k for i in range(len(parts), 0, -1) for k in (".".join(parts[:i]), f"{task}:{'.'.join(parts[:i])}")
                   if k in KNOBS and (i == len(parts) or KNOBS[k].kind is object)]
            seen.update(hit)
            if not hit and (value is None or isinstance(value, (bool, int, float))):
                undeclared.add(f"{key} ({task} {overrides})")
    assert not undeclared, f"add these to segdeconv/schema.py KNOBS: {sorted(undeclared)}"
    assert not set(KNOBS) - seen, f"declared but in no YAML: {sorted(set(KNOBS) - seen)}"


@pytest.mark.slow
def test_every_composition_passes_the_config_check():
    for task, overrides in _compositions():
        check_config(compose_cfg(overrides, task))  # a declared range that a shipped preset breaks fails here


def test_every_default_passes_its_own_check_and_has_a_doc():
    for key, knob in KNOBS.items():
        assert knob.doc, key
        if knob.has_default:
            assert knob.accepts(knob.default), key
    assert all(k.has_default for k in section("trainer").values())


def test_the_engine_settings_are_the_trainer_knobs_by_name():
    names = {f.name for f in fields(TrainSettings)}
    trainer = set(section("trainer"))
    assert names - RUN_FIELDS <= trainer, names - RUN_FIELDS - trainer
    assert trainer == (names - RUN_FIELDS) | TASK_READS, trainer ^ ((names - RUN_FIELDS) | TASK_READS)
    src = (REPO / "segdeconv" / "tasks" / "train.py").read_text()
    assert all(re.search(rf"\bt\.{k}\b", src) for k in TASK_READS), "TASK_READS must be read in tasks/train.py"


def test_train_settings_carry_every_composed_trainer_value(tmp_path):
    cfg = compose_cfg(["trainer.max_epochs=7", "trainer.skip_nonfinite_steps=3", f"output_dir={tmp_path}"])
    s = train_settings(cfg)
    assert (s.max_epochs, s.skip_nonfinite_steps, s.keep_last, s.out_dir) == (7, 3, 2, tmp_path)
    trainer = OmegaConf.to_container(cfg.trainer)
    del trainer["keep_last"]
    with pytest.raises(KeyError, match=r"trainer\.keep_last is missing from the composed config"):
        section_values(trainer, "trainer")


@pytest.mark.parametrize("key, policy", [
    ("trainer.seed", REFUSE), ("trainer.max_epochs", WARN), ("trainer.progress", FREE), ("trainer.device", FREE),
    ("model.encoder.width", REFUSE), ("model.lean", FREE), ("model.recompute", FREE), ("model.checkpoint", FREE),
    ("model.encoder.weights", FREE), ("dataset.root", WARN), ("dataset.num_workers", FREE), ("dataset.image_size", REFUSE),
    ("optimizer.lr", REFUSE), ("loss.criterion.gamma", WARN), ("output_dir", FREE), ("something.new", WARN),
])
def test_resume_policy_comes_from_the_declarations(key, policy):
    assert resume_policy(key) == policy


def test_a_newly_declared_knob_is_range_checked_with_the_key_and_the_fix():
    cfg = compose_cfg(["dataset=camvid", "dataset.root=/x", "dataset.train.transform.color_jitter=-1"])
    with pytest.raises(ConfigError, match=r"^dataset\.train\.transform\.color_jitter=-1 must be a finite number ≥ 0; set"):
        check_config(cfg)
    with pytest.raises(ConfigError, match=r"^trainer\.resume=3 must be null, auto or a checkpoint path"):
        check_config(compose_cfg(["trainer.resume=3"]))
    with pytest.raises(ConfigError, match=r"^trainer\.channels_last='yes' must be one of auto, true, false"):
        check_config(compose_cfg(["trainer.channels_last=yes"]))


def test_the_reference_has_a_row_per_knob():
    rows = list(reference_rows())
    assert [r[0] for r in rows] == list(KNOBS)
    assert ("trainer.max_epochs", "an integer ≥ 1", "5", "warn") == rows[0][:4]
