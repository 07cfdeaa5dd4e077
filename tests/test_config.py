from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG_PATH, PipelineConfig, build_config
from pipeline.core.config_io import dump_yaml
from pipeline.core.errors import ConfigError


def _leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_value_of_the_defaults_file_equals_the_dataclass_default():
    in_file = _leaves(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()))
    defaults = _leaves(yaml.safe_load(dump_yaml(PipelineConfig())))
    assert len(in_file) >= 20  # the file really sets most keys
    assert {key: defaults[key] for key in in_file} == in_file


def test_the_defaults_hold_the_official_values():
    """Fixed values from the official Wav2Lip inference.py and the restorers' own defaults."""
    config = build_config()
    assert config.detect.smooth_window == 5  # get_smoothened_boxes(T=5)
    assert config.detect.pads == (0, 10, 0, 0)  # --pads 0 10 0 0
    assert config.frame_batch == 32 and config.output.fps == 25.0  # Wav2Lip's 25 fps video
    assert config.restore.fidelity == 0.5  # CodeFormer's default w
    assert config.output.crf == 18 and config.output.preset == "medium"
    assert config.tts.engine == "espeak" and config.restore.restorer == "gfpgan"


def test_precedence_defaults_then_yaml_then_flags(tmp_path: Path):
    custom = tmp_path / "c.yaml"
    custom.write_text("restore:\n  fidelity: 0.9\n  batch_size: 2\noutput:\n  crf: 23\n")
    config = build_config({"output": {"crf": 20}, "restore": {"batch_size": None}}, custom)
    assert config.restore.fidelity == 0.9  # from the file
    assert config.restore.batch_size == 2  # None override means "not given"
    assert config.output.crf == 20  # flag wins
    assert config.detect.smooth_window == PipelineConfig().detect.smooth_window  # built-in default


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"restore": {"fidelty": 1.0}}, "unknown key config.restore.fidelty"),
        (
            {"restore": {"restorer": "gfpgann"}},
            "config.restore.restorer must be one of gfpgan, codeformer, none",
        ),
        ({"output": {"crf": "high"}}, "config.output.crf must be of type int"),
        ({"detect": {"pads": [1, 2, 3]}}, "config.detect.pads must be a list of 4 values"),
        ({"quiet": "yes"}, "config.quiet must be of type bool"),
        ({"tts": 3}, "config.tts must be a mapping"),
    ],
)
def test_bad_values_are_rejected_with_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config(overrides)
    assert message in str(info.value)


def test_yaml_round_trip_and_frozen(tmp_path: Path):
    config = build_config({"detect": {"box": [1, 2, 3, 4]}, "restore": {"upscale": 2}})
    path = tmp_path / "saved.yaml"
    path.write_text(dump_yaml(config))
    again = build_config(config_path=path)
    assert again == config
    with pytest.raises(AttributeError):
        config.restore.upscale = 4  # type: ignore[misc]


def test_invalid_yaml_file_is_a_config_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("restore: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(config_path=bad)
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(config_path=tmp_path / "missing.yaml")
    assert yaml.safe_load(dump_yaml(build_config()))["restore"]["restorer"] == "gfpgan"
