"""Config files: flat and authors' layout, overrides, and errors that name the key and file."""
import pytest

from lpld.config import ConfigError, Option, load_yaml, parse_config, resolve

SCHEMA = {"batch_size": Option(64), "lr": Option(0.1), "cos": Option(False), "val_dir": Option(None, str),
          "model": Option("resnet18", choices=("resnet18", "resnet50"))}

AUTHORS = """
common:
  basic: {dataset: tiny, batch_size: 64}
relabel:
  basic: {fkd_seed: 42}
validate:
  basic: {lr: 0.2}
  store_true: [cos]
  path: {val_dir: /data/val}
  aim: {tag_name: x}
"""


def test_authors_layout_is_flattened_per_section(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(AUTHORS)
    flat = load_yaml(str(path), sections=("common", "validate"))
    assert flat == {"dataset": "tiny", "batch_size": 64, "lr": 0.2, "cos": True, "val_dir": "/data/val"}


def test_command_line_overrides_yaml(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("batch_size: 32\nlr: 1\n")
    ns = parse_config(SCHEMA, ["--config", str(path), "--lr", "0.5", "--cos"])
    assert (ns.batch_size, ns.lr, ns.cos, ns.model) == (32, 0.5, True, "resnet18")
    assert isinstance(parse_config(SCHEMA, ["--config", str(path)]).lr, float)


def test_unknown_key_and_wrong_type_name_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_sise: 32\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option 'batch_sise'.*batch_size"):
        resolve(SCHEMA, [(str(path), load_yaml(str(path)))])
    with pytest.raises(ConfigError, match=r"f.yaml: option 'batch_size' must be int; got '64'"):
        resolve(SCHEMA, [("f.yaml", {"batch_size": "64"})])
    with pytest.raises(ConfigError, match="must be one of"):
        resolve(SCHEMA, [("f.yaml", {"model": "vgg"})])
    with pytest.raises(SystemExit):
        parse_config(SCHEMA, ["--config", str(path)])
