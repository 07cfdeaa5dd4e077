from pathlib import Path

import pytest
import yaml

from pipeline.config import PipelineConfig, build_config, dump_yaml
from pipeline.errors import ConfigError


def test_defaults_file_matches_dataclass_defaults_where_given():
    config = build_config()
    assert config.restore.restorer == "gfpgan"
    assert config.detect.pads == (0, 10, 0, 0)
    assert config.output.crf == 18
    assert config.tts.engine == "espeak"


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
