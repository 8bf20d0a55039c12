"""`train.precision`: how it resolves, bf16 autocast on the CPU, fp16's gradient scaler (a step with an
inf gradient is skipped and the scale halved; the scaler's state resumes exactly), every optimiser of
every method stepping through `Context.backward_step`, and the translation cache and `translate`
following the run's precision."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.cyclegan.training import CycleGANTraining
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator
from da_toolkit.adapters.pixel import translate_images
from da_toolkit.benchmark.grid import pixel_signature
from da_toolkit.context import Context
from da_toolkit.data import build_domains
from da_toolkit.errors import UserError
from da_toolkit.models import ResnetGenerator
from da_toolkit import pipeline
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.training import loop, precision as precision_module
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import train_loop
from da_toolkit.training.precision import Precision, resolve_precision
from da_toolkit.translate import translate_folder, translation_precision
from conftest import toy_recipe_dict
from test_cyclegan import tiny_options, toy
from test_resume import cases, recipe_for
from test_translation import TINY, generator_of, toy16

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------- resolving


def test_auto_is_fp32_on_the_cpu_bf16_runs_there_and_fp16_is_refused():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("amp", CPU) == "fp32"
    for name in ("fp32", "bf16"):
        assert resolve_precision(name, CPU) == name
    with pytest.raises(UserError, match="train.precision: fp16 on the CPU is about 40 times slower"):
        resolve_precision("fp16", CPU)


def test_translate_falls_back_to_fp32_where_the_runs_precision_cannot_run():
    with pytest.warns(UserWarning, match="fp16 on the CPU .*; translating in fp32"):
        assert translation_precision("fp16", CPU).name == "fp32"
    assert translation_precision("bf16", CPU).name == "bf16"


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_prefers_bf16_then_fp16(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision_module, "cuda_has_bf16", lambda device: has_bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("amp", torch.device("cuda")) == expected


def test_bf16_on_a_gpu_without_it_is_a_user_error(monkeypatch):
    monkeypatch.setattr(precision_module, "cuda_has_bf16", lambda device: False)
    with pytest.raises(UserError, match=r"train.precision: bf16 .* no native bfloat16 .*; use fp16"):
        resolve_precision("bf16", torch.device("cuda"))


def test_cells_of_amp_and_auto_share_a_translator_and_fp32_does_not():
    with pytest.warns(FutureWarning, match="'amp' is deprecated"):
        signature = {name: pixel_signature(recipe_from_dict(toy_recipe_dict(pixel=TINY, train={"precision": name})))
                     for name in ("amp", "auto", "fp32")}
    assert signature["amp"] == signature["auto"] != signature["fp32"]


def test_recipe_takes_the_precisions_and_amp_is_a_deprecated_alias():
    for name in ("auto", "fp32", "bf16", "fp16"):
        assert recipe_from_dict(toy_recipe_dict(train={"precision": name})).train.precision == name
    with pytest.warns(FutureWarning, match="'amp' is deprecated and means 'auto'"):
        recipe_from_dict(toy_recipe_dict(train={"precision": "amp"}))
    with pytest.raises(UserError, match="train.precision: expected one of: auto, fp32, bf16, fp16"):
        recipe_from_dict(toy_recipe_dict(train={"precision": "fp8"}))


# ------------------------------------------------------------------------------ fp16's gradient scaler


def scaled_step(precision: Precision, model: nn.Module, optimizer, factor: float) -> None:
    with precision.autocast():
        loss = model(torch.ones(2, 3)).float().sum() * factor
    precision.backward_step(loss, optimizer)


def test_fp16_skips_a_step_with_an_inf_gradient_and_halves_the_scale():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fp16 = Precision("fp16", CPU)
    before = [p.detach().clone() for p in model.parameters()]
    scaled_step(fp16, model, optimizer, math.inf)
    scaler = fp16.scaler(optimizer)
    assert scaler.get_scale() == 2.0 ** 15  # 65536 halved
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped
    scaled_step(fp16, model, optimizer, 0.25)  # d loss / d weight = 0.25 · 2 images: finite at scale 2^15
    assert scaler.get_scale() == 2.0 ** 15
    assert torch.allclose(model.weight, before[0] - 0.1 * 0.5, atol=1e-4)  # the step went through, unscaled


def test_fp32_and_bf16_step_without_a_scaler():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for name in ("fp32", "bf16"):
        assert Precision(name, CPU).scaler(optimizer) is None
        assert Precision(name, CPU).scalers({"optimizer": optimizer}) == {}


class TinyTraining:
    """A linear model trained in fp16 whose loss is infinite at iteration 1 (the scale halves there)."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)

    def step(self, iteration: int) -> dict:
        scaled_step(self.ctx.precision, self.model, self.optimizer, math.inf if iteration == 1 else 0.25)
        return {}

    def run(self, run_dir, iterations: int, resume: bool = False, crash_at: int | None = None,
            precision: str = "fp16") -> None:
        self.ctx = Context(run_dir, progress=False, checkpoint_every=3, resume=resume, precision=Precision(precision, CPU))

        def step(iteration):
            if iteration == crash_at:
                raise RuntimeError("crash")
            return self.step(iteration)

        train_loop(self.ctx, "stage", iterations, step, {"model": self.model, "optimizer": self.optimizer})


def test_the_gradient_scaler_resumes_exactly(tmp_path):
    straight = TinyTraining()
    straight.run(tmp_path / "straight", 5)
    crashed = TinyTraining()
    with pytest.raises(RuntimeError, match="crash"):
        crashed.run(tmp_path / "resumed", 5, crash_at=4)
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "stage.pt")
    assert saved["iteration"] == 3 and saved["grad_scalers"]["optimizer"]["scale"] == 2.0 ** 15
    resumed = TinyTraining()
    resumed.run(tmp_path / "resumed", 5, resume=True)
    expected = straight.ctx.precision.scaler(straight.optimizer).state_dict()
    assert resumed.ctx.precision.scaler(resumed.optimizer).state_dict() == expected
    assert expected["scale"] == 2.0 ** 15 and expected["_growth_tracker"] == 3
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))


def test_a_checkpoint_without_scalers_resumes_with_fresh_ones(tmp_path):
    """A run started in fp32 or bf16 (e.g. on the CPU) and resumed in fp16 (another GPU) gets new scalers."""
    TinyTraining().run(tmp_path, 1, precision="fp32")
    assert load_checkpoint(tmp_path / "checkpoints" / "stage.pt")["grad_scalers"] == {}
    again = TinyTraining()
    again.run(tmp_path, 4, resume=True)  # iterations 1 (inf: 2^16 -> 2^15), 2 and 3
    state = again.ctx.precision.scaler(again.optimizer).state_dict()
    assert (state["scale"], state["_growth_tracker"]) == (2.0 ** 15, 2)


# ------------------------------------------------------------- every optimiser goes through backward_step


@pytest.mark.parametrize("case", [c for c in cases() if c[2] == 0 or c[1] == "target_only"],
                         ids=lambda c: "+".join(x for x in (c[0], c[1]) if x))
def test_every_optimiser_of_every_method_steps_through_backward_step(case, toy_source_run, tmp_path, monkeypatch):
    """So that fp16 scales every one of them: the optimisers a stage checkpoints are exactly those
    that `Precision.backward_step` was given."""
    stepped, checkpointed = set(), set()
    backward_step, restore_stage = Precision.backward_step, loop.restore_stage

    def record_step(self, loss, optimizer):
        stepped.add(id(optimizer))
        return backward_step(self, loss, optimizer)

    def record_state(ctx, stage, state):
        checkpointed.update(id(obj) for obj in state.values() if isinstance(obj, torch.optim.Optimizer))
        return restore_stage(ctx, stage, state)

    monkeypatch.setattr(Precision, "backward_step", record_step)
    monkeypatch.setattr(loop, "restore_stage", record_state)
    run(recipe_for(*case, toy_source_run), tmp_path, progress=False)
    assert stepped == checkpointed
    assert bool(checkpointed) == (case[1] != "adabn")  # AdaBN re-estimates batch-norm statistics, no gradient step


# --------------------------------------------------------------------------- bf16 and fp16 on the CPU


def output_dtypes(module: nn.Module) -> list:
    dtypes = []
    module.register_forward_hook(lambda m, inputs, output: dtypes.append(output.dtype))
    return dtypes


def test_bf16_trains_dann_under_cpu_autocast_with_finite_losses(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "dann", "discriminator_hidden": [16]},
                                              train={"iterations": 4, "batch_size": 16, "precision": "bf16"}))
    domains = build_domains(recipe.data, 0)
    classifier = AdapterSetup.from_recipe(recipe).make_classifier(10)
    dtypes = output_dtypes(classifier.head)
    ctx = Context(tmp_path, progress=False, log_every=1, precision=Precision("bf16", CPU))
    scalars = []
    original = ctx.log_scalars
    ctx.log_scalars = lambda stage, step, values: scalars.append(values) or original(stage, step, values)
    ADAPTERS.get("dann")(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(
        classifier, domains.source, domains.target, ctx)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert len(scalars) == 4 and all(math.isfinite(v) for values in scalars for v in values.values())
    assert {"loss/total", "loss/domain"} <= set(scalars[-1])


def test_bf16_trains_cyclegan_under_cpu_autocast_with_finite_losses(tmp_path):
    ctx = Context(tmp_path, progress=False, precision=Precision("bf16", CPU))
    training = CycleGANTraining(tiny_options(), toy(0, 32), toy(60, 32), ctx)
    dtypes = output_dtypes(training.g_ab)
    for iteration in range(3):
        scalars = training.step(iteration)
        assert all(math.isfinite(float(value)) for value in scalars.values()), scalars
    assert dtypes and set(dtypes) == {torch.bfloat16}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_run_records_its_precision_and_fp16_checkpoints_every_optimisers_scaler(precision, tmp_path, monkeypatch):
    """fp16 as auto resolves it on a GPU without bf16 (a recipe asking for fp16 on the CPU is refused;
    the library runs it on the CPU, slowly, which is enough for these tiny networks)."""
    monkeypatch.setattr(pipeline, "resolve_precision", lambda requested, device: precision)
    recipe = recipe_for("cyclegan", "adda", 0)
    metrics = run(recipe, tmp_path, progress=False)
    assert metrics["precision"] == precision
    scalers = {path.stem: set(load_checkpoint(path)["grad_scalers"])
               for path in (tmp_path / "checkpoints").glob("*.pt")}
    if precision == "bf16":
        assert all(not keys for keys in scalers.values())
        return
    assert scalers == {"pixel": {"optimizer_g", "optimizer_d"}, "pixel_classifier": {"optimizer"},
                       "pixel_oracle": {"optimizer"}, "feature_pretrain": {"optimizer"},
                       "feature_adapt": {"encoder_optimizer", "discriminator_optimizer"}}


# ------------------------------------------------------------------------- translation in the run's precision


def test_the_translation_cache_is_keyed_by_precision(tmp_path):
    torch.manual_seed(0)
    generator = ResnetGenerator(1, 1, ngf=4, n_blocks=1)
    source = toy16(0)
    options = recipe_from_dict(toy_recipe_dict(pixel=TINY)).pixel.options
    translated = {}
    for name in ("fp32", "bf16", "fp32"):
        ctx = Context(tmp_path, progress=False, precision=Precision(name, CPU))
        translated[name] = CycleGANTranslator(generator, ctx, options).translate_only(source).images
        assert ctx.metrics["pixel"]["translation_cache_file"].endswith(f"_{name}")
        assert torch.equal(translated[name], translate_images(generator, source.images, CPU, 16, Precision(name, CPU)))
    assert ctx.metrics["pixel"]["translation_cache"] == "hit"
    assert not torch.equal(translated["fp32"], translated["bf16"])  # so a shared entry would be wrong
    assert len(list((tmp_path / "cache").glob("translated_*"))) == 2


def test_translate_uses_the_runs_precision(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(pixel=TINY, train={"iterations": 2, "precision": "bf16"}))
    run(recipe, tmp_path / "run", progress=False)
    generator = generator_of(tmp_path / "run")
    pixels = toy16(0, count=4).images
    (tmp_path / "in").mkdir()
    for index, image in enumerate(pixels):
        Image.fromarray(image[0].numpy()).save(tmp_path / "in" / f"{index}.png")
    assert translate_folder(tmp_path / "run", tmp_path / "in", tmp_path / "out") == 4
    written = torch.stack([torch.from_numpy(np.array(Image.open(tmp_path / "out" / f"{i}.png")))[None]
                           for i in range(4)])
    bf16 = translate_images(generator, pixels, CPU, 64, Precision("bf16", CPU))
    assert torch.equal(written, bf16)
    assert not torch.equal(bf16, translate_images(generator, pixels, CPU, 64))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"] == "bf16"
