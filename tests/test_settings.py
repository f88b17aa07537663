from pathlib import Path

import pytest

from learnviz.errors import ConfigError
from learnviz.settings import SHIPPED_CONFIG_DIR, Settings, defaults_yaml, load_settings


def test_defaults_without_any_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("learnviz.settings.SHIPPED_CONFIG_DIR", tmp_path / "none")
    s = load_settings(environ={})
    assert s.batch_size == 64 and s.layers == ["mid", "last"] and s.trust_remote_code is False
    assert s.sources == {}


def test_layers_yaml_then_env_then_cli(tmp_path):
    cfg = tmp_path / "lv.yaml"
    cfg.write_text("batch_size: 8\ndevice: cpu\nlayers: [0, -1]\n")
    s = load_settings(cfg, environ={})
    assert (s.batch_size, s.device, s.layers) == (8, "cpu", [0, -1])
    s = load_settings(cfg, environ={"LEARNVIZ_BATCH_SIZE": "16", "LEARNVIZ_LAYERS": "[mid]"})
    assert (s.batch_size, s.layers) == (16, ["mid"])
    assert s.sources["batch_size"] == "environment" and s.sources["device"] == str(cfg)
    s = load_settings(cfg, {"batch_size": 32, "device": None}, environ={"LEARNVIZ_BATCH_SIZE": "16"})
    assert s.batch_size == 32 and s.device == "cpu"  # a flag not given (None) leaves the lower layer


def test_unknown_key_names_key_and_file(tmp_path):
    cfg = tmp_path / "lv.yaml"
    cfg.write_text("batch_sise: 8\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert "batch_sise" in str(err.value) and str(cfg) in str(err.value) and "batch_size" in str(err.value)


def test_mistyped_value_names_key_and_file(tmp_path):
    cfg = tmp_path / "lv.yaml"
    cfg.write_text("batch_size: lots\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert "batch_size" in str(err.value) and str(cfg) in str(err.value) and "int" in str(err.value)
    cfg.write_text("dtype: float64\n")
    with pytest.raises(ConfigError, match="dtype"):
        load_settings(cfg, environ={})
    cfg.write_text("trust_remote_code: 1\n")  # 1 is not a bool: a typo here must not turn it on
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_settings(cfg, environ={})


def test_unknown_env_variable_is_an_error():
    with pytest.raises(ConfigError, match="LEARNVIZ_BACH_SIZE"):
        load_settings(environ={"LEARNVIZ_BACH_SIZE": "3"})
    with pytest.raises(ConfigError, match="LEARNVIZ_SETTLE_SECONDS"):
        load_settings(environ={"LEARNVIZ_SETTLE_SECONDS": "soon"})


def test_env_string_settings_stay_strings():
    s = load_settings(environ={"LEARNVIZ_ARCHIVE": "2024", "LEARNVIZ_SETTLE_SECONDS": "3"})
    assert s.archive == "2024" and s.settle_seconds == 3.0


def test_invalid_yaml_names_file_and_line(tmp_path):
    cfg = tmp_path / "lv.yaml"
    cfg.write_text("batch_size: 8\nlayers: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert str(cfg) in str(err.value) and "line" in str(err.value)


def test_shipped_yaml_lists_every_default():
    shipped = (SHIPPED_CONFIG_DIR / "learnviz.yaml").read_text()
    assert shipped.strip() == defaults_yaml().strip(), "regenerate: learnviz config --defaults > config/learnviz.yaml"
    s = load_settings(SHIPPED_CONFIG_DIR / "learnviz.yaml", environ={})
    assert s.to_dict() == Settings().to_dict()


def test_archive_dir_default_and_error():
    assert (load_settings(overrides={"checkpoints": "/x/run"}, environ={}).archive_dir()
            == Path("/x/run/learnviz-archive"))
    with pytest.raises(ConfigError, match="archive"):
        load_settings(environ={}).archive_dir()


@pytest.mark.parametrize("key, value, words", [
    ("batch_size", 0, "must be at least 1, got 0"),
    ("batch_size", -3, "must be at least 1, got -3"),
    ("settle_seconds", -5, "must be at least 0, got -5"),
    ("learned_threshold", 1.0, "must be between 0 and 1 (both excluded), got 1.0"),
    ("health_z", ".nan", "must be above 0, got nan"),
    ("dashboard_port", 70000, "must be from 0 to 65535, got 70000"),
])
def test_a_value_outside_its_range_is_refused_where_it_is_read(tmp_path, key, value, words):
    """A batch size of 0 used to fail every checkpoint's extraction (each failure recorded); every
    numeric setting with a range is refused in the file, the environment and the command line."""
    from learnviz.errors import ConfigError
    path = tmp_path / "learnviz.yaml"
    path.write_text(f"{key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert err.value.path == str(path) and err.value.field == key and words in str(err.value)
    env = f"LEARNVIZ_{key.upper()}"
    with pytest.raises(ConfigError) as err:
        load_settings(environ={env: str(value)})
    assert err.value.field == env and words.split(", got")[0] in str(err.value)
    if value != ".nan":
        with pytest.raises(ConfigError) as err:
            load_settings(overrides={key: value}, environ={})
        assert err.value.field == f"--{key.replace('_', '-')}"


def test_every_default_is_within_its_range():
    from learnviz.settings import _out_of_range, public_fields
    defaults = Settings()
    assert [f.name for f in public_fields() if _out_of_range(f.name, getattr(defaults, f.name))] == []


def test_a_settings_file_that_is_not_utf8_names_the_file(tmp_path):
    from learnviz.errors import ConfigError
    path = tmp_path / "learnviz.yaml"
    path.write_bytes(b"\xff\xfebatch_size: 4\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert err.value.path == str(path) and "not UTF-8 text (byte 0)" in str(err.value)
