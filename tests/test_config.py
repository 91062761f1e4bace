"""kidneyseg.config: one parser (unknown keys refused at every level) and one preset + override merge."""

import json

import pytest

from kidneyseg.config import from_dict, merge, to_dict
from kidneyseg.errors import KidneysegError
from kidneyseg.train.augment import AugmentConfig
from kidneyseg.train.config import TrainConfig, preset
from kidneyseg.train.prior import PriorPerturbation


def test_nested_parse_and_round_trip():
    cfg = TrainConfig.from_dict({"stage": 2, "augment": {"p_rotation": 0.5, "rotation_deg": [-10, 10]},
                                 "sampler": {"tumor_fraction": 0.8, "prior": {"p_drop": 0.3}}})
    assert isinstance(cfg.augment, AugmentConfig) and cfg.augment.rotation_deg == (-10, 10)
    assert isinstance(cfg.sampler.prior, PriorPerturbation) and cfg.sampler.prior.p_drop == 0.3
    again = TrainConfig.from_json(json.dumps(cfg.to_dict()))
    assert again == cfg
    assert TrainConfig.from_dict({"augment": None}).augment is None


@pytest.mark.parametrize("data, where", [
    ({"epoch": 3}, "config: unknown key 'epoch'"),
    ({"sampler": {"tumour_fraction": 0.5}}, "config.sampler: unknown key 'tumour_fraction'; valid keys: fg_fraction"),
    ({"sampler": {"prior": {"p_dorp": 0.5}}}, "config.sampler.prior: unknown key 'p_dorp'"),
    ({"augment": {"p_rotate": 0.5}}, "config.augment: unknown key 'p_rotate'"),
    ({"sampler": {"fg_fraction": 2}}, "config.sampler: fg_fraction must be in"),
])
def test_unknown_keys_and_bad_values_name_where(data, where):
    with pytest.raises(KidneysegError, match=where.replace("(", r"\(")):
        TrainConfig.from_dict(data)


def test_saved_config_says_how_the_sampler_and_prior_were_set():
    d = preset("thesis", 2).to_dict()
    assert set(d["sampler"]) == {"fg_fraction", "tumor_fraction", "max_locations", "prior"}
    assert set(d["sampler"]["prior"]) >= {"p_empty", "p_morph", "p_drop", "p_swap", "p_shift", "coarsen"}
    assert set(d["augment"]) >= {"p_rotation", "p_mirror"}


def test_merge_is_deep_and_refuses_unknown_keys():
    base = {"a": 1, "net": {"x": 1, "y": 2}, "aug": None}
    assert merge(base, {"net": {"y": 3}}) == {"a": 1, "net": {"x": 1, "y": 3}, "aug": None}
    assert merge(base, {"aug": {"p": 1}}) == {"a": 1, "net": {"x": 1, "y": 2}, "aug": {"p": 1}}
    assert merge(base, None) == base
    with pytest.raises(KidneysegError, match=r"overrides.net: unknown key 'z'; valid keys: x, y"):
        merge(base, {"net": {"z": 1}})


def test_preset_plus_overrides_is_the_one_merge():
    cfg = preset("demo", 2, {"epochs": 2, "network": {"residual": False}})
    assert cfg.stage == 2 and cfg.epochs == 2 and cfg.network.residual is False
    assert cfg.network.base_features == 8 and cfg.network.in_channels == 3  # the rest of the demo preset
    assert preset("demo", 1).network.in_channels == 1
    with pytest.raises(KidneysegError, match="unknown preset 'demoo'; valid: thesis, demo"):
        preset("demoo")
    with pytest.raises(KidneysegError, match="overrides.network: unknown key 'residul'"):
        preset("thesis", 1, {"network": {"residul": False}})


def test_to_dict_is_json_ready():
    d = to_dict(AugmentConfig())
    assert isinstance(d["rotation_deg"], list) and json.loads(json.dumps(d)) == d
    assert from_dict(AugmentConfig, d) == AugmentConfig()
