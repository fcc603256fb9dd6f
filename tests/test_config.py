"""Training settings: precedence, types, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedistill.config import TrainConfig, read_config_file
from edgedistill.errors import EdgeDistillError, UnknownNameError


def test_values_take_the_declared_types() -> None:
    cfg = TrainConfig.from_dict({"epochs": "30", "lr": "0.05", "milestones": ["0.3", 0.6], "limit": None, "amp": False})
    assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.limit, cfg.amp) == (30, 0.05, [0.3, 0.6], None, False)


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": "many"}, "'epochs' in flags must be a whole number"),
    ({"epochs": 2.5}, "must be a whole number"),
    ({"milestones": 0.5}, "must be a list of numbers"),
    ({"amp": "yes"}, "must be true or false"),
])
def test_wrong_types_are_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(EdgeDistillError, match=message):
        TrainConfig.from_dict(values, source="flags")


def test_unknown_setting_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("val_size", [1.5, -1])
def test_bad_validation_split(val_size: float) -> None:
    with pytest.raises(EdgeDistillError, match="--val-size"):
        TrainConfig(val_size=val_size).validate()


def test_config_files_yaml_toml_and_train_table(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("epochs: 7\nkind: depthwise\n")
    (tmp_path / "b.toml").write_text("[train]\nepochs = 9\nmethod = 'mutual'\n")
    assert read_config_file(tmp_path / "a.yaml") == {"epochs": 7, "kind": "depthwise"}
    assert read_config_file(tmp_path / "b.toml") == {"epochs": 9, "method": "mutual"}
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(EdgeDistillError, match="cannot parse"):
        read_config_file(tmp_path / "bad.yaml")
    with pytest.raises(EdgeDistillError, match="not found"):
        read_config_file(tmp_path / "missing.yaml")


def test_keep_takes_a_name_or_a_list_and_is_saved() -> None:
    from edgedistill.config import config_yaml

    assert TrainConfig.from_dict({"keep": "layers.0.conv1"}).keep == ["layers.0.conv1"]
    cfg = TrainConfig.from_dict({"keep": ["a", "b"]})
    assert cfg.keep == ["a", "b"] and "keep:\n- a\n- b\n" in config_yaml(cfg)
    assert TrainConfig().keep == []


@pytest.mark.parametrize(("values", "message"), [
    ({"model": "online-teacher"}, "unknown model 'online-teacher'"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"limit": 0}, "--limit must be at least 1"),
    ({"image_size": -1}, "--image-size must be at least 1"),
    ({"momentum": -0.5}, "--momentum"),
    ({"gamma": 0}, "--gamma"),
    ({"kind": "group", "groups": 1}, "no saving"),
    ({"device": "gpu"}, "did you mean 'cuda'"),
    ({"dataset": "fashion_mnist"}, "did you mean 'fashion-mnist'"),
])
def test_nonsense_settings_from_a_file_fail_validation_with_a_hint(values: dict, message: str) -> None:
    with pytest.raises(EdgeDistillError, match=message) as info:
        TrainConfig.from_dict(values).validate()
    assert info.value.hint


def test_kind_options_are_top_level_settings_of_the_kind_that_takes_them() -> None:
    cfg = TrainConfig.from_dict({"kind": "group", "groups": "8"}).validate()
    assert cfg.cheap_spec().option("groups") == 8 and cfg.to_dict()["groups"] == 8
    assert "groups" not in TrainConfig(kind="depthwise").to_dict()
    assert TrainConfig().to_dict() == TrainConfig.from_dict(TrainConfig().to_dict()).to_dict()
    # A run config of an earlier version: groups: 4 beside kind: shift changes nothing, so it still loads ...
    assert TrainConfig.from_dict({"kind": "shift", "groups": 4}).validate().cheap_spec() == TrainConfig().cheap_spec()
    # ... but a value that would be silently ignored is an error.
    with pytest.raises(EdgeDistillError, match="--groups applies to --kind group, not shift"):
        TrainConfig.from_dict({"kind": "shift", "groups": 8}).validate()
