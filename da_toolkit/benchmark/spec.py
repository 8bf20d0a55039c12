"""The benchmark file: tasks, methods, seeds, the k axis, overrides and profiles (see benchmarks/README.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from da_toolkit.benchmark.sweep import Sweep, parse_sweeps
from da_toolkit.errors import UserError
from da_toolkit.registry import did_you_mean


@dataclass
class Profile:
    """Overrides for one kind of machine (e.g. cpu: small budgets; gpu: the recipes' own)."""

    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Benchmark:
    path: Path
    name: str
    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    recipe_dir: Path  # holds <task>_<method>.yaml
    output_dir: Path = Path("benchmarks/runs")
    label_counts: list[int] | None = None  # the target_labels_per_class axis (scarce-label study)
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    method_recipes: dict[str, str] = field(default_factory=dict)  # method -> method whose recipe it starts from
    profiles: dict[str, Profile] = field(default_factory=dict)
    published: Path | None = None
    sweeps: dict[str, Sweep] = field(default_factory=dict)  # method -> its hyper-parameter configurations (sweep.py)

    def variants(self, method: str) -> list[tuple[str, dict, list[str]]]:
        """(name, hyper-parameters, overrides) of each configuration of `method`: the recipe's own values
        (name = the method), then its sweep's configurations (name = method@i)."""
        sweep = self.sweeps.get(method)
        own = [(method, {}, [])]
        if sweep is None:
            return own
        return own + [(name, dict(configuration), sweep.overrides(i))
                      for i, (name, configuration) in enumerate(zip(sweep.names(), sweep.configurations))]

    def recipe_path(self, task: str, method: str) -> Path:
        return self.recipe_dir / f"{task}_{self.method_recipes.get(method, method)}.yaml"

    def cell_overrides(self, method: str, profile: str | None) -> list[str]:
        """In order: the method's own, the benchmark's, the profile's, the profile's for the method."""
        chosen = self.profiles[profile] if profile else Profile()
        return [*self.method_overrides.get(method, []), *self.overrides, *chosen.overrides,
                *chosen.method_overrides.get(method, [])]


BENCHMARK_KEYS = ("name", "tasks", "methods", "seeds", "target_labels_per_class", "recipe_dir", "output_dir",
                  "overrides", "method_overrides", "method_recipes", "profiles", "published", "sweeps")
PROFILE_KEYS = ("overrides", "method_overrides")


def read_mapping(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} file must be a mapping of keys")
    return data


def check_keys(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserError(f"{where}{key}: unknown key{did_you_mean(str(key), list(allowed))} "
                            f"(allowed: {', '.join(allowed)})")


def _list_of(raw: dict, key: str, kind: type, where: str, required: bool = False) -> list | None:
    """raw[key] checked to be a list of `kind`; nested lists are flattened (to reuse a YAML anchor)."""
    value = raw.get(key)
    if value is None:
        if required:
            raise UserError(f"{where}{key}: missing (a list of {kind.__name__})")
        return None
    if isinstance(value, list):
        value = [v for item in value for v in (item if isinstance(item, list) else [item])]
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where}{key}: expected a list of {kind.__name__}, got {value!r}")
    return value


def _method_overrides(raw: dict, methods: list[str], where: str) -> dict[str, list[str]]:
    value = raw.get("method_overrides") or {}
    if not isinstance(value, dict):
        raise UserError(f"{where}method_overrides: expected a mapping method -> list of overrides")
    for method in value:
        if method not in methods:
            raise UserError(f"{where}method_overrides.{method}: not a method of this benchmark"
                            f"{did_you_mean(str(method), methods)} (methods: {', '.join(methods)})")
    return {method: _list_of(value, method, str, f"{where}method_overrides.") or [] for method in value}


def parse_seeds(text: str) -> list[int]:
    """`compare --seeds`: "0,1,2" -> [0, 1, 2]; UserError for anything but distinct integers >= 0."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, e.g. 0,1,2, got '{text}'") from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: expected distinct integers >= 0, got '{text}'")
    return seeds


def load_benchmark(path: str | Path) -> Benchmark:
    """Read and check a benchmark file; UserError naming the key for anything wrong."""
    path = Path(path)
    raw = read_mapping(path, "benchmark")
    where = f"{path}: "
    check_keys(raw, BENCHMARK_KEYS, where)
    tasks = _list_of(raw, "tasks", str, where, required=True)
    methods = _list_of(raw, "methods", str, where, required=True)
    seeds = _list_of(raw, "seeds", int, where) or [0]
    label_counts = _list_of(raw, "target_labels_per_class", int, where)
    if label_counts is not None and any(k < 0 for k in label_counts):
        raise UserError(f"{where}target_labels_per_class: counts must be 0 or more, got {label_counts}")
    for key, items in (("tasks", tasks), ("methods", methods), ("seeds", seeds)):
        if not items:
            raise UserError(f"{where}{key}: must name at least one")
    method_recipes = raw.get("method_recipes") or {}
    if not isinstance(method_recipes, dict) or not all(isinstance(v, str) for v in method_recipes.values()):
        raise UserError(f"{where}method_recipes: expected a mapping method -> method whose recipe it starts from")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise UserError(f"{where}profiles: expected a mapping profile name -> {{overrides, method_overrides}}")
    parsed_profiles = {}
    for name, body in profiles.items():
        body = body or {}
        if not isinstance(body, dict):
            raise UserError(f"{where}profiles.{name}: expected a mapping with {' and/or '.join(PROFILE_KEYS)}")
        check_keys(body, PROFILE_KEYS, f"{where}profiles.{name}.")
        parsed_profiles[str(name)] = Profile(_list_of(body, "overrides", str, f"{where}profiles.{name}.") or [],
                                             _method_overrides(body, methods, f"{where}profiles.{name}."))
    published = raw.get("published")
    return Benchmark(
        path=path, name=str(raw.get("name") or path.stem), tasks=tasks, methods=methods, seeds=seeds,
        recipe_dir=path.parent / raw.get("recipe_dir", "../recipes"),
        output_dir=Path(raw.get("output_dir", "benchmarks/runs")), label_counts=label_counts,
        overrides=_list_of(raw, "overrides", str, where) or [],
        method_overrides=_method_overrides(raw, methods, where), method_recipes=method_recipes,
        profiles=parsed_profiles, published=path.parent / published if published else None,
        sweeps=parse_sweeps(raw.get("sweeps"), methods, where))


def choose_profile(benchmark: Benchmark, profile: str | None) -> str | None:
    """The named profile (checked); without a name, 'gpu' on a CUDA machine or 'cpu' otherwise, when defined."""
    if profile is not None:
        if profile not in benchmark.profiles:
            allowed = ", ".join(benchmark.profiles) or "none: this file defines no profiles"
            raise UserError(f"--profile: unknown profile '{profile}' for {benchmark.path}"
                            f"{did_you_mean(profile, list(benchmark.profiles))} (allowed: {allowed})")
        return profile
    import torch

    machine = "gpu" if torch.cuda.is_available() else "cpu"
    return machine if machine in benchmark.profiles else None
