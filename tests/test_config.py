from dataclasses import dataclass, field

import pytest

from openmed_ray.config import Config, require
from openmed_ray.errors import ConfigError


@dataclass
class Inner(Config):
    rank: int = 16

    def validate(self) -> None:
        require(self.rank > 0, "rank", f"must be positive, got {self.rank}")


@dataclass
class Outer(Config):
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    targets: tuple[str, ...] = ("query", "value")


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\ninner:\n  rank: 8\ntargets: [query]\n")
    config = Outer.from_yaml(path)
    assert config == Outer("y", Inner(8), ("query",))
    assert Outer.from_dict(config.to_dict()) == config


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"Outer.inner: unknown key\(s\) \['rnak'\]"):
        Outer.from_dict({"inner": {"rnak": 3}})
    with pytest.raises(ConfigError, match="rank: must be positive, got 0"):
        Outer.from_dict({"inner": {"rank": 0}})
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Outer.from_yaml(path)


def test_a_partial_yaml_file_takes_the_rest_from_the_flags(tmp_path):
    from openmed_ray.config import AnnotateConfig, ClaimConfig, load_with_overrides

    path = tmp_path / "settings.yaml"
    path.write_text("write_attempts: 2\nclaim:\n  stale_after_seconds: 60\nthreshold: 0.5\n")
    config = load_with_overrides(
        AnnotateConfig, path, {"input": "in", "output": "out", "threshold": 0.9, "resume": None}
    )
    assert (config.input, config.write_attempts, config.threshold) == ("in", 2, 0.9)
    assert config.claim == ClaimConfig(heartbeat_seconds=10.0, stale_after_seconds=60.0)
    path.write_text("claim:\n  stale_after_seconds: 5\n")
    with pytest.raises(ConfigError, match="claim.stale_after_seconds: must be at least 3"):
        load_with_overrides(AnnotateConfig, path, {"input": "in", "output": "out"})
