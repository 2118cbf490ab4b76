import copy

from pydantic import BaseModel

import pytest

from pipeline.config import load_params, parse_params
from pipeline.errors import UserError
from pipeline.registry import METHODS


def test_repository_params_are_valid(params):
    assert params.methods and all(m in METHODS.names() for m in params.methods)
    assert set(params.method_params) == set(METHODS.names())


def _err(raw) -> str:
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    return str(exc.value)


def test_unknown_key_named(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["pretrain"]["epocs"] = 3
    msg = _err(raw)
    assert "pretrain.epocs" in msg and "unknown key" in msg


def test_unknown_section_named(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["pretrian"] = {}
    assert "pretrian" in _err(raw)


def test_wrong_type_named(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["pretrain"]["batch_size"] = "big"
    msg = _err(raw)
    assert "pretrain.batch_size" in msg and "'big'" in msg


def test_out_of_range_named(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["augment"]["hflip"] = 1.5
    msg = _err(raw)
    assert "augment.hflip" in msg and "less than or equal to 1" in msg


def test_crop_scale_order_checked(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["augment"]["crop_scale"] = [0.9, 0.2]
    assert "augment.crop_scale" in _err(raw)


def test_unknown_method_lists_valid_ones(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["methods"] = ["simclr", "simclrr"]
    msg = _err(raw)
    assert "simclrr" in msg and "simclr" in msg.split("valid methods are")[1]


def test_method_section_validated_by_method(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["simclr"]["temperature"] = -1
    msg = _err(raw)
    assert "simclr" in msg and "temperature" in msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_bad_yaml(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(p)


def test_params_frozen(params):
    with pytest.raises(Exception):
        params.pretrain.epochs = 1


def test_method_section_overrides_shared_sections(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["simclr"]["pretrain"] = {"optimizer": "adamw", "lr": 0.001}
    raw["simclr"]["encoder"] = {"width": 16}
    p = parse_params(raw)
    assert p.pretrain_for("simclr").optimizer == "adamw" and p.pretrain_for("simclr").epochs == p.pretrain.epochs
    assert p.encoder_for("simclr").width == 16 and p.encoder.width == raw["encoder"]["width"]
    raw["simclr"]["pretrain"] = {"lr": -1}
    assert "lr" in _err(raw)


def _models_and_sections(raw: dict):
    """(pydantic model, its params.yaml section, dotted name) for every validated section."""
    from pipeline.config import AugmentParams, DataParams, EncoderParams, PretrainParams
    from pipeline.registry import METHODS as methods, PROTOCOLS as protocols

    out = [(DataParams, raw["data"], "data"), (EncoderParams, raw["encoder"], "encoder"),
           (AugmentParams, raw["augment"], "augment"), (PretrainParams, raw["pretrain"], "pretrain")]
    out += [(protocols.get(n).Params, raw.get(n) or {}, n) for n in protocols.names()]
    out += [(methods.get(n).Params, {k: v for k, v in (raw.get(n) or {}).items() if k not in ("pretrain", "encoder")}, n)
            for n in methods.names()]
    for model, section, name in list(out):  # nested models (label_efficiency.finetune, diagnostics.augment)
        for key, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(section.get(key), dict):
                out.append((sub, section[key], f"{name}.{key}"))
    return out


def test_code_defaults_agree_with_params_yaml(default_params_dict):
    """params.yaml is where a default lives: a default in code must be the same value, so
    deleting a key from params.yaml (or a test building ``Params()``) runs the same recipe."""
    from pydantic_core import PydanticUndefined

    disagree = []
    for model, section, name in _models_and_sections(default_params_dict):
        for key, field in model.model_fields.items():
            default = field.default_factory() if field.default_factory else field.default
            if default is PydanticUndefined or key not in section:
                continue
            if default != section[key]:
                disagree.append(f"{name}.{key}: code {default!r}, params.yaml {section[key]!r}")
    assert not disagree, "code defaults that differ from params.yaml:\n" + "\n".join(disagree)
