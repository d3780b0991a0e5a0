"""Write YAML the way torchtune will read it back.

ruamel.yaml keeps the base config's comments and key order; torchtune reads
configs with OmegaConf (PyYAML rules, YAML 1.1). Two representers close the
gap: ``None`` is written ``null`` (not an empty value), and a string that
OmegaConf would read as something else (``'yes'``, ``'1e-3'``, ``'null'``) is
quoted, so every value means the same to both.

    >>> dump({"a": None, "b": "yes", "c": 0.0003})
    "a: null\\nb: 'yes'\\nc: 0.0003\\n"
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter


class _Representer(RoundTripRepresenter):
    pass


def _represent_none(representer: RoundTripRepresenter, _: None):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _represent_str(representer: RoundTripRepresenter, data: str):
    if data and _omegaconf_retypes(data):
        return representer.represent_scalar("tag:yaml.org,2002:str", data, style="'")
    return representer.represent_str(data)


_Representer.add_representer(type(None), _represent_none)
_Representer.add_representer(str, _represent_str)


@lru_cache(maxsize=4096)
def _omegaconf_retypes(text: str) -> bool:
    """True when OmegaConf's YAML loader would read the plain scalar ``text`` as a non-string."""
    import yaml

    tag = _loader().resolve(yaml.ScalarNode, text, (True, False))
    return tag != "tag:yaml.org,2002:str"


@lru_cache(maxsize=1)
def _loader() -> Any:
    from omegaconf._utils import get_yaml_loader  # omegaconf 2.3 (pinned: what torchtune 0.6.1 was released with)

    return get_yaml_loader()("")


def make_yaml() -> YAML:
    """A round-trip YAML instance with the project's representers; lines are never wrapped."""
    yaml = YAML(typ="rt")
    yaml.Representer = _Representer
    yaml.width = 4096  # a wrapped scalar would make a run's diff harder to read
    yaml.preserve_quotes = True
    yaml.boolean_representation = ["False", "True"]  # torchtune's configs spell them so
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


_YAML = make_yaml()


def dump(data: Any) -> str:
    """Serialize ``data`` (round-trip nodes or plain Python) to text."""
    buf = io.StringIO()
    _YAML.dump(data, buf)
    return buf.getvalue()


def dump_plain(data: Any) -> str:
    """Serialize plain data (no comments to keep) quickly, with libyaml when available.

    PyYAML follows the same YAML 1.1 rules as OmegaConf, so its quoting is right for torchtune too.
    """
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def load(text: str) -> Any:
    """Round-trip parse (comments and positions kept)."""
    return _YAML.load(text)
