"""harness.py's config machinery: a dataclass field becomes a flag, the flags give the config back,
model fields are the checkpoint's model_args, and row names show exactly the changed fields."""
import argparse
import dataclasses

import pytest

import evaluate
import generator as G
import harness
from backtranslation import BackTranslatorConfig
from vae import VAEConfig


@dataclasses.dataclass
class ToyConfig:
    FLAG_PREFIX = "toy-"
    width: int = harness.hyper(8, "width", model=True)
    rate: float = harness.hyper(0.5, "rate", label="rate {}")
    pair: tuple = harness.hyper((1.0, 2.0), "pair", label=False)
    on: bool = harness.hyper(True, "on", model=True)
    kind: str = harness.hyper("a", "kind", choices=("a", "b"), flag="--kind")
    maybe: float = harness.hyper(None, "maybe", type=float)


def parse(cls, argv):
    p = argparse.ArgumentParser()
    harness.add_flags(p, cls)
    return p.parse_args(argv)


def test_fields_become_flags_and_come_back():
    args = parse(ToyConfig, [])
    assert vars(args) == {"toy_width": 8, "toy_rate": 0.5, "toy_pair": (1.0, 2.0), "toy_on": True,
                          "kind": "a", "toy_maybe": None}
    cfg = harness.from_args(ToyConfig, parse(ToyConfig, ["--toy-width", "3", "--toy-pair", "4", "5",
                                                         "--no-toy-on", "--kind", "b", "--toy-maybe", "2"]))
    assert cfg == ToyConfig(width=3, pair=(4.0, 5.0), on=False, kind="b", maybe=2.0)
    with pytest.raises(SystemExit):
        parse(ToyConfig, ["--kind", "c"])                                   # choices are kept
    assert harness.from_args(ToyConfig, {"toy_width": 5}) == ToyConfig(width=5)   # an older checkpoint
    flags = harness.to_flags(ToyConfig, width=3, pair=(4.0, 5.0), on=False, kind="b")
    assert flags == ["--toy-width", "3", "--toy-pair", "4.0", "5.0", "--no-toy-on", "--kind", "b"]
    assert harness.from_args(ToyConfig, parse(ToyConfig, flags)) == ToyConfig(3, 0.5, (4.0, 5.0), False, "b")
    assert harness.model_args(ToyConfig(width=3), extra=1) == {"width": 3, "on": True, "extra": 1}


def test_describe_names_exactly_the_changed_fields():
    assert harness.describe(ToyConfig()) == []
    assert harness.describe(ToyConfig(rate=0.25, pair=(0.0, 0.0), kind="b", on=False)) == \
        ["rate 0.25", "--no-toy-on", "--kind b"]


def test_every_model_config_round_trips_through_train_py():
    import train
    base = ["--vae", ".", "--data-dir", ".", "--out-dir", "."]
    for stage, cls in (("vae", VAEConfig), ("generator", G.GeneratorConfig),
                       ("backtranslation", BackTranslatorConfig)):
        assert harness.from_args(cls, train.get_args(["--stage", stage] + base, announce=False)) == cls()
    args = train.get_args(["--stage", "generator", "--window", "5", "--bt-layers", "3", "--beta", "0.1",
                           "--logvar-floor", "none"] + base, announce=False)
    assert harness.from_args(G.GeneratorConfig, args).window == 5
    assert harness.from_args(G.GeneratorConfig, args).logvar_floor is None
    assert harness.from_args(BackTranslatorConfig, args).num_layers == 3
    assert harness.from_args(VAEConfig, args).beta == 0.1


def test_row_names_come_from_the_configs():
    def name(phase=1, variant="base", **flags):
        return evaluate.generator_name({"args": dict(flags, phase=phase), "vae_model_args": {"variant": variant}})
    assert name() == "A2V-SLP"
    assert name(phase=2) == "A2V-SLP + KL"
    assert name(phase=2, kl_weight=0.0) == "A2V-SLP phase 2 without KL"
    assert name(d_model=128, ff=256, enc_layers=2) == "A2V-SLP"                 # sizes are not ablations
    assert name(window=5, fusion="global") == "A2V-SLP (N=5, global attention)"
    assert name(query="mean", query_span=5) == "A2V-SLP (mean query q=5)"
    assert name(alignment="none") == "A2V-SLP (the paper's decoder, no alignment)"   # nothing else follows
    assert name(no_such_flag=1, variant="csl") == "A2V-SLP (csl VAE)"
    assert name(hand_weights="fixed", s_max=8.0) == "A2V-SLP (fixed hand weights)"  # s_max unused then
    assert name(hand_weights="fixed", fixed_weights=(1.0, 1.0, 1.0)) == \
        "A2V-SLP (fixed hand weights, λ = (1.0, 1.0, 1.0))"


def test_a_checkpoint_the_model_refuses_is_one_error_naming_flag_and_file(tmp_path):
    """harness.load_for, under --vae, --init, --backtranslator and sample.py's generator: arguments the
    model refuses, or another stage's checkpoint, are one DataError naming the flag and the file."""
    import torch
    path = tmp_path / "bt.pt"
    torch.save({"stage": "backtranslation", "model": {}, "model_args": {"vocab": ["no specials"]}}, path)
    with pytest.raises(harness.DataError, match=rf"^--backtranslator {path}: damaged back-translation "
                                                r"checkpoint: AssertionError: vocab must start with"):
        evaluate.load_backtranslator(str(path))
    with pytest.raises(harness.DataError, match=rf"^--vae {path}: a 'backtranslation' checkpoint, expected"):
        harness.load_for("--vae", str(path), "vae", lambda ckpt: ckpt)
