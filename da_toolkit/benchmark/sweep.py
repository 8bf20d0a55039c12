"""Hyper-parameter sweeps of a benchmark file: a search space per method and how to sample it.

```yaml
sweeps:
  dann:
    sample: {kind: random, seed: 0, count: 8}      # or {kind: grid, points: 3}
    space:
      feature.trade_off: {log_uniform: [0.1, 3.0]}
      train.lr: {choices: [0.003, 0.01, 0.03]}
```

A dimension is a recipe override key and one of: `choices: [v, ...]` (any YAML values),
`uniform: [low, high]`, `log_uniform: [low, high]` (0 < low) or `int_uniform: [low, high]`
(integers, both ends included). Sampled floats are rounded to 3 significant digits, so that the
value a cell runs with is the value recorded and shown.

* `random`: configuration i takes, for every key, the i-th draw of a random stream of its own,
  seeded by (sample seed, method, key): the same file gives the same configurations, whatever the
  other methods' sweeps, the order of the keys or the other keys of the space; raising `count`
  keeps the configurations already drawn (their cells are reused). A draw equal to an earlier
  configuration is skipped.
* `grid`: every combination (the product over the keys, in the file's order); a range gives
  `points` values evenly spaced (log-spaced for log_uniform), ends included.

Configuration i of method m is the cell variant `m@i` (run directory `<task>/m@i/seed<s>`),
beside the method's own cell `m` with the recipe's hand-set values. Whether a key exists and
every value is valid is checked against the recipe schema when the grid is expanded (grid.py).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import yaml

from da_toolkit.errors import UserError
from da_toolkit.registry import did_you_mean

DIMENSION_KINDS = ("choices", "uniform", "log_uniform", "int_uniform")
SAMPLE_KINDS = ("random", "grid")
SAMPLE_KEYS = {"random": ("kind", "seed", "count"), "grid": ("kind", "points")}
SIGNIFICANT_DIGITS = 3
MAX_DRAWS_PER_CONFIGURATION = 100  # random: draws tried per configuration before a space is declared too small


@dataclass(frozen=True)
class Dimension:
    """One key of a search space: `choices` (a list of values) or a range [low, high] of `kind`."""

    key: str
    kind: str
    values: tuple  # choices: the values; a range: (low, high)

    def draw(self, generator: random.Random):
        if self.kind == "choices":
            return generator.choice(self.values)
        low, high = self.values
        if self.kind == "int_uniform":
            return generator.randint(low, high)
        if self.kind == "log_uniform":
            return self.rounded(math.exp(generator.uniform(math.log(low), math.log(high))))
        return self.rounded(generator.uniform(low, high))

    def grid(self, points: int | None) -> list:
        """The values of this key in a grid: the choices, or `points` evenly (log-)spaced values of the range."""
        if self.kind == "choices":
            return list(self.values)
        low, high = self.values
        steps = [i / (points - 1) for i in range(points)] if points > 1 else [0.0]
        if self.kind == "log_uniform":
            values = [self.rounded(math.exp(math.log(low) + s * (math.log(high) - math.log(low)))) for s in steps]
        elif self.kind == "int_uniform":
            values = [round(low + s * (high - low)) for s in steps]
        else:
            values = [self.rounded(low + s * (high - low)) for s in steps]
        return list(dict.fromkeys(values))

    def ends(self) -> list:
        """The values whose validity stands for the whole dimension: every choice, or both ends of the range."""
        return list(self.values)

    def rounded(self, value: float) -> float:
        """`value` to SIGNIFICANT_DIGITS significant digits, kept inside the range."""
        low, high = self.values
        return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), low), high)


@dataclass(frozen=True)
class Sweep:
    """The configurations to run of one method: a sampling rule over a search space."""

    method: str
    kind: str  # random | grid
    space: tuple[Dimension, ...]
    seed: int = 0
    count: int = 0  # random: the number of configurations
    points: int | None = None  # grid: values per range
    configurations: tuple[dict, ...] = field(init=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "configurations", tuple(self._sample()))

    def _sample(self) -> list[dict]:
        if self.kind == "grid":
            keys = [d.key for d in self.space]
            return [dict(zip(keys, values)) for values in itertools.product(*(d.grid(self.points) for d in self.space))]
        streams = {d.key: random.Random(f"{self.seed}/{self.method}/{d.key}") for d in self.space}
        configurations: list[dict] = []
        for _ in range(MAX_DRAWS_PER_CONFIGURATION * self.count):
            configuration = {d.key: d.draw(streams[d.key]) for d in self.space}
            if configuration not in configurations:
                configurations.append(configuration)
                if len(configurations) == self.count:
                    break
        return configurations  # fewer than count when the space is too small (parse_sweeps refuses it)

    def names(self) -> list[str]:
        return [configuration_name(self.method, i) for i in range(len(self.configurations))]

    def overrides(self, index: int) -> list[str]:
        """The `key=value` overrides of configuration `index`."""
        return [f"{key}={yaml_value(value)}" for key, value in self.configurations[index].items()]

    def record(self) -> dict:
        """The sweep as recorded beside the results: the rule, the space and every configuration."""
        sample = {"kind": self.kind, **({"seed": self.seed, "count": self.count} if self.kind == "random"
                                        else {"points": self.points} if self.points is not None else {})}
        return {"sample": sample, "space": {d.key: {d.kind: list(d.values)} for d in self.space},
                "configurations": [{"name": name, "hyper_parameters": configuration, "overrides": self.overrides(i)}
                                   for i, (name, configuration) in enumerate(zip(self.names(), self.configurations))]}


def configuration_name(method: str, index: int) -> str:
    """The variant name of a method's configuration, e.g. dann@3: a valid directory name and `--only` glob."""
    return f"{method}@{index}"


def yaml_value(value: Any) -> str:
    """`value` as override text that reads back as the same value (1e-05 as 1.0e-05, which YAML reads as a float)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("\n").removesuffix("\n...")


def hyper_parameter_text(hyper_parameters: dict) -> str:
    """e.g. 'trade_off=0.42 lr=0.01': each key's last part (the full key where two share it)."""
    short = [key.rsplit(".", 1)[-1] for key in hyper_parameters]
    return " ".join(f"{s if short.count(s) == 1 else key}={yaml_value(value)}"
                    for s, (key, value) in zip(short, hyper_parameters.items()))


def parse_sweeps(raw: Any, methods: list[str], where: str) -> dict[str, Sweep]:
    """The `sweeps` mapping of a benchmark file, checked: method -> Sweep."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}sweeps: expected a mapping method -> {{sample, space}}")
    sweeps = {}
    for method, body in raw.items():
        here = f"{where}sweeps.{method}"
        if method not in methods:
            raise UserError(f"{here}: not a method of this benchmark{did_you_mean(str(method), methods)} "
                            f"(methods: {', '.join(methods)})")
        if not isinstance(body, dict) or set(body) != {"sample", "space"}:
            raise UserError(f"{here}: expected a mapping with exactly the keys sample and space, got {body!r}")
        sweeps[method] = _sweep(method, body["sample"], body["space"], here)
    return sweeps


def _sweep(method: str, sample: Any, space: Any, where: str) -> Sweep:
    if not isinstance(sample, dict) or sample.get("kind") not in SAMPLE_KINDS:
        kind = sample.get("kind") if isinstance(sample, dict) else None
        raise UserError(f"{where}.sample.kind: expected one of {', '.join(SAMPLE_KINDS)}, got {kind!r}"
                        f"{did_you_mean(str(kind), list(SAMPLE_KINDS))}")
    kind = sample["kind"]
    for key in sample:
        if key not in SAMPLE_KEYS[kind]:
            allowed = list(SAMPLE_KEYS[kind])
            raise UserError(f"{where}.sample.{key}: unknown key for kind {kind}{did_you_mean(str(key), allowed)} "
                            f"(allowed: {', '.join(allowed)})")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}.space: expected a mapping recipe key -> dimension with at least one key, "
                        f"e.g. feature.trade_off: {{log_uniform: [0.1, 3.0]}}")
    dimensions = tuple(_dimension(str(key), value, f"{where}.space.{key}") for key, value in space.items())
    if kind == "random":
        count = sample.get("count")
        if not _is_int(count) or count < 1:
            raise UserError(f"{where}.sample.count: expected a whole number of configurations ≥ 1, got {count!r}")
        seed = sample.get("seed", 0)
        if not _is_int(seed):
            raise UserError(f"{where}.sample.seed: expected an integer, got {seed!r}")
        sweep = Sweep(method, kind, dimensions, seed=seed, count=count)
        if len(sweep.configurations) < count:
            raise UserError(f"{where}.sample.count: {MAX_DRAWS_PER_CONFIGURATION * count} draws gave "
                            f"{len(sweep.configurations)} distinct configurations, not {count}: the space is too "
                            f"small; lower the count or use kind: grid")
        return sweep
    points = sample.get("points")
    ranges = [d.key for d in dimensions if d.kind != "choices"]
    if ranges and (not _is_int(points) or points < 2):
        raise UserError(f"{where}.sample.points: a grid over the range(s) {', '.join(ranges)} needs points, the "
                        f"number of values per range (2 or more), got {points!r}")
    return Sweep(method, kind, dimensions, points=points)


def _dimension(key: str, raw: Any, where: str) -> Dimension:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UserError(f"{where}: expected one of {', '.join(f'{{{k}: ...}}' for k in DIMENSION_KINDS)}, got {raw!r}")
    [(kind, values)] = raw.items()
    if kind not in DIMENSION_KINDS:
        raise UserError(f"{where}.{kind}: unknown kind of dimension{did_you_mean(str(kind), list(DIMENSION_KINDS))} "
                        f"(allowed: {', '.join(DIMENSION_KINDS)})")
    if kind == "choices":
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.choices: expected a non-empty list of values, got {values!r}")
        if len({yaml_value(v) for v in values}) < len(values):
            raise UserError(f"{where}.choices: a value is listed twice in {values!r}")
        return Dimension(key, kind, tuple(values))
    number = _is_int if kind == "int_uniform" else _is_number
    if not isinstance(values, list) or len(values) != 2 or not all(number(v) for v in values):
        wanted = "integers" if kind == "int_uniform" else "numbers"
        raise UserError(f"{where}.{kind}: expected [low, high], two {wanted}, got {values!r}")
    low, high = values
    if low > high:
        raise UserError(f"{where}.{kind}: low {low} is above high {high}")
    if kind == "log_uniform" and low <= 0:
        raise UserError(f"{where}.log_uniform: the range must be positive (a logarithm is taken), got low {low}")
    if kind != "int_uniform":
        low, high = float(low), float(high)
    return Dimension(key, kind, (low, high))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
