"""StarGAN (adapters/stargan/, training/stargan_losses.py): the networks' shapes, each loss term by hand,
one iteration equal to the authors' update (yunjey/stargan solver.py, re-implemented below as the plain
reference formula), n_critic, and a toy run with translate (--to) and report."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from PIL import Image

from da_toolkit import benchmark as bench
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator, weights_hash
from da_toolkit.adapters.source_only import SourceOnly
from da_toolkit.adapters.stargan import StarGAN, StarGANOptions
from da_toolkit.adapters.stargan.training import StarGANTraining, build_discriminator, build_generator
from da_toolkit.adapters.pixel import translate_images
from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset, build_domain, build_domains
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.report import write_report
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.gan_losses import cycle_consistency_loss
from da_toolkit.training.stargan_losses import (domain_classification_loss, gradient_penalty, interpolate,
                                                wasserstein_critic_loss, wasserstein_generator_loss)
from conftest import toy_digits, toy_recipe_dict

TINY = {"ngf": 4, "ndf": 4, "generator_blocks": 1, "image_grid_every": 0, "semantic_weight": 0.0,
        "label_filter": "off", "label_preservation_iterations": 0}


@pytest.mark.parametrize("size, channels, layers, downsamplings", [(28, 1, 2, 1), (32, 3, 2, 1), (32, 1, 3, 2)])
def test_shapes_for_digit_images(size, channels, layers, downsamplings):
    options = StarGANOptions(ngf=8, ndf=8, discriminator_layers=layers, generator_downsamplings=downsamplings)
    StarGAN.check(options, size, channels)
    generator, discriminator = build_generator(options, channels, size, 3), build_discriminator(options, channels, size, 3)
    x = torch.rand(2, channels, size, size) * 2 - 1
    fake = generator(x, F.one_hot(torch.tensor([0, 2]), 3))
    assert fake.shape == x.shape and fake.abs().max() <= 1
    scores, logits = discriminator(fake)
    assert scores.shape == (2, 1, size // 2 ** layers, size // 2 ** layers) and logits.shape == (2, 3)
    # the label channels change the output: G is conditioned on c
    assert not torch.allclose(fake[0], generator(x, F.one_hot(torch.tensor([1, 2]), 3))[0])


def test_default_sizes_follow_the_cyclegans_small_image_rule():
    options = StarGANOptions()
    assert (options.downsamplings_for(28), options.layers_for(28)) == (1, 2)
    assert (options.downsamplings_for(128), options.layers_for(128)) == (2, 6)  # the authors' at 128 px
    with pytest.raises(UserError, match="pixel.discriminator_layers"):
        StarGAN.check(StarGANOptions(discriminator_layers=3), 28, 1)


def test_options_name_the_bad_key():
    with pytest.raises(UserError, match="pixel.n_critic"):
        StarGANOptions(n_critic=0)
    with pytest.raises(UserError, match="pixel.domains: unknown dataset 'mnsit'"):
        StarGANOptions(domains=["mnsit"])
    assert StarGANOptions(domains=["toy_third", "toy_target"]).domain_names("toy_source", "toy_target") == [
        "toy_third", "toy_target", "toy_source"]


def test_translator_keys_name_the_resolved_domains_and_leave_out_how_the_feature_stage_uses_translations():
    setup = AdapterSetup(None, 16, 1, 0, None, None, ("toy_source", "toy_target"))
    adapter = StarGAN(StarGANOptions(domains=["toy_third"], semantic_weight=0.0), setup)
    pixel = {"adapter": "stargan", "domains": ["toy_third"], "iterations": 7, "feature_data": "translated"}
    keys = adapter.translator_keys(pixel, {"lr": 0.1})
    assert keys == {"pixel": {"adapter": "stargan", "domains": ["toy_third", "toy_source", "toy_target"],
                              "iterations": 7}}
    assert "train" in StarGAN(StarGANOptions(), setup).translator_keys(pixel, {"lr": 0.1})  # f_S shapes G


def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared():
    """D(x) = Σ_pixels w·x: ∇_x D = w for every image, so the penalty is λ (‖w‖₂ − 1)² exactly."""
    w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    real, fake = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    mixed = interpolate(real, fake, torch.rand(3, 1, 1, 1))
    scores = (mixed * w).sum((1, 2, 3))[:, None]
    expected = 10 * (w.norm() - 1) ** 2
    assert gradient_penalty(scores, mixed, 10.0).item() == pytest.approx(expected.item(), rel=1e-6)
    # a per-patch critic: the penalty takes the gradient of the sum of the patch scores
    patches = mixed * w
    assert gradient_penalty(patches, mixed, 10.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_interpolates_lie_between_real_and_fake():
    real, fake, alpha = torch.zeros(2, 1, 1, 1), torch.ones(2, 1, 1, 1), torch.tensor([0.25, 1.0])[:, None, None, None]
    mixed = interpolate(real, fake.requires_grad_(), alpha)
    assert mixed.flatten().tolist() == [0.75, 0.0] and mixed.requires_grad and mixed.grad_fn is None


def test_adversarial_classification_and_reconstruction_terms_by_hand():
    scores_real, scores_fake = torch.tensor([[1.0, 3.0]]), torch.tensor([[-2.0, 0.5]])
    assert wasserstein_critic_loss(scores_real, scores_fake).item() == pytest.approx(-2.0 + -0.75)
    assert wasserstein_generator_loss(scores_fake).item() == pytest.approx(0.75)
    logits, domains = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1])
    e2, e1, e3 = torch.tensor(2.0).exp(), torch.tensor(1.0).exp(), torch.tensor(3.0).exp()
    expected = -0.5 * (torch.log(e2 / (e2 + 2)) + torch.log(e1 / (1 + e1 + e3)))  # CE, one label per domain
    assert domain_classification_loss(logits, domains, 2.0).item() == pytest.approx(2 * expected.item(), rel=1e-6)
    real, rebuilt = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.25, 0.0]])
    assert cycle_consistency_loss(rebuilt, real, 10.0).item() == pytest.approx(10 * (0.25 + 1.0) / 2)


# ------------------------------------------------------------------ one iteration, as the authors'


def toy_domains(size: int = 8) -> list[DomainDataset]:
    return [DomainDataset(toy_digits("train", shift, 12).images, torch.full((12,), -1), f"toy{shift}", 10)
            for shift in (0, 60, 120)]


def make_training(tmp_path, **changes) -> StarGANTraining:
    options = StarGANOptions(**{**TINY, "iterations": 1000, "batch_size": 2, "n_critic": 2, "lambda_cls": 0.5,
                                "lambda_rec": 3.0, "lambda_gp": 7.0, "lr": 0.01, **changes})
    torch.manual_seed(0)
    return StarGANTraining(options, toy_domains(), Context(tmp_path, progress=False))


def authors_iteration(G, D, g_optimizer, d_optimizer, x_real, label_org, i, o) -> None:
    """solver.py's `train` loop body for `--dataset RaFD`, written out as the plain formula."""
    label_trg = label_org[torch.randperm(label_org.size(0))]
    c_org, c_trg = F.one_hot(label_org, 3).float(), F.one_hot(label_trg, 3).float()

    out_src, out_cls = D(x_real)
    d_loss_real = -torch.mean(out_src)
    d_loss_cls = F.cross_entropy(out_cls, label_org)
    x_fake = G(x_real, c_trg)
    out_src, _ = D(x_fake.detach())
    d_loss_fake = torch.mean(out_src)
    alpha = torch.rand(x_real.size(0), 1, 1, 1)
    x_hat = (alpha * x_real.data + (1 - alpha) * x_fake.data).requires_grad_(True)
    out_src, _ = D(x_hat)
    dydx = torch.autograd.grad(out_src, x_hat, torch.ones(out_src.size()), retain_graph=True, create_graph=True)[0]
    d_loss_gp = torch.mean((torch.sqrt(torch.sum(dydx.view(dydx.size(0), -1) ** 2, dim=1)) - 1) ** 2)
    d_loss = d_loss_real + d_loss_fake + o.lambda_cls * d_loss_cls + o.lambda_gp * d_loss_gp
    g_optimizer.zero_grad(), d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()

    if (i + 1) % o.n_critic == 0:
        x_fake = G(x_real, c_trg)
        out_src, out_cls = D(x_fake)
        g_loss_fake = -torch.mean(out_src)
        g_loss_cls = F.cross_entropy(out_cls, label_trg)
        x_reconst = G(x_fake, c_org)
        g_loss_rec = torch.mean(torch.abs(x_real - x_reconst))
        g_loss = g_loss_fake + o.lambda_rec * g_loss_rec + o.lambda_cls * g_loss_cls
        g_optimizer.zero_grad(), d_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()


def test_two_iterations_equal_the_authors_update_on_the_same_weights_and_batches(tmp_path):
    """Iteration 0 (D step) and 1 (D and G steps, n_critic 2): every parameter and buffer (instance-norm
    running statistics included) of G and D equals the authors' to 1e-6."""
    training = make_training(tmp_path)
    o = training.options
    G, D = copy.deepcopy(training.generator), copy.deepcopy(training.discriminator)
    g_optimizer = torch.optim.Adam(G.parameters(), o.lr, [o.beta1, o.beta2])
    d_optimizer = torch.optim.Adam(D.parameters(), o.lr, [o.beta1, o.beta2])
    for i in range(2):
        x_real, label_org = training.batch()
        rng = torch.get_rng_state()
        authors_iteration(G, D, g_optimizer, d_optimizer, x_real, label_org, i, o)
        torch.set_rng_state(rng)
        scalars = training.update(x_real, label_org, i)
        assert ("loss/G" in scalars) == (i == 1)
        for ours, theirs in ((training.generator, G), (training.discriminator, D)):
            for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
                assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6), (i, name)
    assert not torch.equal(training.generator.main[0].weight, copy.deepcopy(G).main[0].weight * 0)  # it moved
    batches = training.batch()[1]
    assert batches.tolist() == [0, 0, 1, 1, 2, 2]  # batch_size images of every domain, labelled by position


def test_a_mutated_term_changes_the_iteration(tmp_path):
    """The equality above can fail: a λ_rec of a different value gives a different G."""
    a, b = make_training(tmp_path), make_training(tmp_path, lambda_rec=4.0)
    x, labels = a.batch()
    b.batch()
    for training in (a, b):
        torch.manual_seed(1)
        training.update(x, labels, 0)
        training.update(x, labels, 1)
    assert not torch.allclose(a.generator.main[0].weight, b.generator.main[0].weight, atol=1e-6)


def test_the_generator_is_updated_every_n_criticth_discriminator_step(tmp_path):
    training = make_training(tmp_path, n_critic=5)
    steps = []
    training.optimizer_g.register_step_pre_hook(lambda *_: steps.append("G"))
    training.optimizer_d.register_step_pre_hook(lambda *_: steps.append("D"))
    for i in range(10):
        training.step(i)
    assert "".join(steps) == "DDDDDG" * 2  # iterations 4 and 9


def test_learning_rate_constant_then_linear_to_zero(tmp_path):
    training = make_training(tmp_path, iterations=10, decay_start=0.6)
    assert [training.learning_rate(i) for i in (0, 6, 8)] == pytest.approx([0.01, 0.01, 0.005])


def test_semantic_term_is_its_weight_times_ce_of_f_s_on_the_translation_against_f_s_on_the_original(tmp_path):
    """w_sem CE(f_S(G(x, c)), argmax f_S(x)), with G as the step found it and c the step's own draw."""
    training = make_training(tmp_path, semantic_weight=2.0, n_critic=1)
    f_s = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 10))
    torch.nn.init.normal_(f_s[1].weight, std=0.5)
    training.semantic_classifier = f_s.requires_grad_(False)
    x, original = training.batch()
    generator = copy.deepcopy(training.generator)
    torch.manual_seed(5)
    target = original[torch.randperm(len(original))]
    torch.manual_seed(5)
    scalars = training.update(x, original, 0)
    expected = 2.0 * F.cross_entropy(f_s(generator(x, F.one_hot(target, 3))), f_s(x).argmax(1))
    assert scalars["loss/semantic"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_translation_normalises_by_each_images_statistics_and_leaves_the_running_ones_alone():
    """As the authors translate (networks in training mode), without updating the running statistics."""
    generator = build_generator(StarGANOptions(ngf=4, generator_blocks=1), 1, 16, 2)
    x, c = torch.rand(3, 1, 16, 16) * 2 - 1, F.one_hot(torch.tensor([0, 1, 1]), 2)
    generator(x, c)  # moves the running statistics away from their initial values
    before = copy.deepcopy(generator.state_dict())
    trained = generator(x, c)
    after_train = copy.deepcopy(generator.state_dict())
    generator.eval()
    assert torch.allclose(generator(x, c), trained, atol=1e-6)
    assert all(torch.equal(after_train[k], v) for k, v in generator.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in after_train.items())  # training mode does move them


# ------------------------------------------------------------------ a toy run, translate, report


@pytest.fixture(scope="module")
def star_run(tmp_path_factory):
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("stargan") / "run"
    pixel = {"adapter": "stargan", **TINY, "domains": ["toy_source", "toy_target", "toy_third"], "iterations": 4,
             "batch_size": 4, "n_critic": 2, "label_filter": "drop", "semantic_weight": 1.0,
             "semantic_classifier_iterations": 4, "label_preservation_iterations": 4, "image_grid_every": 2}
    metrics = run(recipe_from_dict(toy_recipe_dict(pixel=pixel, train={"iterations": 4})), run_dir, progress=False)
    return run_dir, metrics


def test_a_toy_run_trains_translates_and_reports_its_diagnostics(star_run):
    run_dir, metrics = star_run
    assert metrics["pixel_adapter"] == "stargan"
    assert 0 <= metrics["label_preservation"]["rate"] <= 1 and "label_filter" in metrics
    assert metrics["stages"]["pixel"]["translation_cache"] == "miss"
    # the source set was translated by G(·, c = the target's label): its cache is named by that translator
    adapter = StarGAN(StarGANOptions(**{**TINY, "domains": ["toy_source", "toy_target", "toy_third"]}),
                      AdapterSetup(None, 16, 1, 0, None, None, ("toy_source", "toy_target")))
    into_target = weights_hash(adapter.load_generator(RunDir(run_dir), "toy_target"))
    assert metrics["stages"]["pixel"]["translation_cache_file"].startswith(f"translated_{into_target}_")
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "pixel.pt")
    assert checkpoint["iteration"] == 4 and {"generator", "discriminator", "stream_2"} <= set(checkpoint["state"])


def read_png(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path)))[None]


def test_translate_to_each_domain_uses_G_with_that_domains_label(star_run, tmp_path):
    run_dir, _ = star_run
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = F.interpolate(toy_digits("test", 0, 3).images.float(), size=16).to(torch.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image[0].numpy()).save(folder / f"{index}.png")
    adapter = StarGAN(StarGANOptions(**{**TINY, "domains": ["toy_source", "toy_target", "toy_third"]}),
                      AdapterSetup(None, 16, 1, 0, None, None, ("toy_source", "toy_target")))
    assert adapter.directions == ("toy_target", "toy_source", "toy_third")
    written = {}
    for domain in ("toy_target", "toy_third"):
        result = CliRunner().invoke(main, ["translate", str(run_dir), "--input", str(folder), "--output",
                                           str(tmp_path / domain), "--to", domain])
        assert result.exit_code == 0 and f"translated 3 images ({domain})" in result.output, result.output
        written[domain] = torch.stack([read_png(tmp_path / domain / f"{i}.png") for i in range(3)])
        expected = translate_images(adapter.load_generator(RunDir(run_dir), domain), pixels, torch.device("cpu"), 64)
        assert torch.equal(written[domain], expected), domain
    assert not torch.equal(written["toy_target"], written["toy_third"])  # c decides the translation
    result = CliRunner().invoke(main, ["translate", str(run_dir), "--input", str(folder), "--output",
                                       str(tmp_path / "default")])
    assert "translated 3 images (toy_target)" in result.output  # the default: into the target's style
    result = CliRunner().invoke(main, ["translate", str(run_dir), "--input", str(folder), "--output",
                                       str(tmp_path / "bad"), "--to", "a2b"])
    assert result.exit_code == 2 and "toy_target or toy_source or toy_third" in result.output


def test_report_shows_one_row_per_target_domain(star_run, tmp_path):
    run_dir, _ = star_run
    write_report(run_dir, output=tmp_path, sample=20)
    page = (tmp_path / "report.html").read_text()
    for row, domain in enumerate(("toy_target", "toy_source", "toy_third")):
        assert f"row {row + 2}: translation into {domain}" in page
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pixel"]["domains"] == ["toy_source", "toy_target", "toy_third"]
    assert len(report["pixel"]["oracle_reads_per_class"]) == 10


def test_the_translation_grid_script_draws_a_row_per_target_domain_under_the_source(star_run, tmp_path, capsys,
                                                                                    monkeypatch):
    import runpy
    from pathlib import Path

    run_dir, _ = star_run
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "translation_grid.py"
    monkeypatch.setattr("sys.argv", ["translation_grid.py", str(run_dir), str(tmp_path / "grid.png"), "--count", "3"])
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == [
        "row 1: source (toy_source/train)", *[f"row {row + 2}: translation into {domain} by the run's StarGAN"
                                             for row, domain in enumerate(("toy_target", "toy_source", "toy_third"))]]
    size = recipe_from_dict(yaml.safe_load((run_dir / "recipe.yaml").read_text())).data.image_size
    cell = 4 * size + 2  # upscaled 4x, 2 pixels of padding
    assert Image.open(tmp_path / "grid.png").size == (3 * cell + 2, 4 * cell + 2)


def test_the_translators_script_reads_preservation_agreement_and_seconds_from_each_cell(star_run, tmp_path, capsys,
                                                                                       monkeypatch):
    import json
    import runpy
    from pathlib import Path

    run_dir, _ = star_run
    cell = tmp_path / "bench" / "runs" / "toy" / "stargan" / "seed0"
    cell.parent.mkdir(parents=True)
    cell.symlink_to(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "translators.py"
    monkeypatch.setattr("sys.argv", ["translators.py", str(tmp_path / "bench"), "--method", "stargan"])
    runpy.run_path(str(script), run_name="__main__")
    header, rule, row = capsys.readouterr().out.splitlines()
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == [metrics["task"], str(metrics["seed"]),
                         f"{100 * metrics['label_preservation']['rate']:.2f}",
                         f"{100 * metrics['label_preservation']['oracle_on_raw_source']:.2f}",
                         f"{100 * metrics['label_filter']['agreement']:.2f}"]
    assert f"pixel {metrics['stages']['wall_time_s']['pixel']:.0f}" in cells[6] and cells[7] == "trained here"


# ------------------------------------------------------------------ one translator, many tasks (compare)


EVERY_DOMAIN = ["toy_source", "toy_target", "toy_third"]
SHARED_PIXEL = {"adapter": "stargan", **TINY, "domains": EVERY_DOMAIN, "iterations": 4, "batch_size": 4,
                "n_critic": 2, "label_filter": "drop", "semantic_classifier_iterations": 4,
                "label_preservation_iterations": 4}
TASKS = {"ab": ("toy_source", "toy_target"), "ca": ("toy_third", "toy_source"),  # task: (source, target)
         "bc": ("toy_target", "toy_third")}


def task_data(task: str) -> dict:
    """The task's data section; its source limited to half its images (a listed domain is learned whole)."""
    source, target = TASKS[task]
    return {"source": {"name": source, "limit": 200}, "target": {"name": target},
            "target_test": {"name": target, "split": "test"}}


def stargan_benchmark(tmp_path, **keys):
    """recipes/<task>_<method>.yaml for the tasks ab, ca and bc and the methods stargan and stargan_long (a longer
    feature stage): one StarGAN of every toy domain, semantic loss off; benchmark keys from `keys`."""
    folder = tmp_path / "recipes"
    folder.mkdir(exist_ok=True)
    for task in TASKS:
        for method, iterations in (("stargan", 3), ("stargan_long", 5)):
            recipe = toy_recipe_dict(data=task_data(task), pixel=SHARED_PIXEL, train={"iterations": iterations})
            (folder / f"{task}_{method}.yaml").write_text(yaml.safe_dump(recipe))
    spec = {"name": "toy", "recipe_dir": "recipes", "output_dir": str(tmp_path / "out"), "tasks": list(TASKS),
            "methods": ["stargan", "stargan_long"], "seeds": [0, 1], **keys}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(spec))
    cells, _ = bench.expand(bench.load_benchmark(tmp_path / "bench.yaml"), None, tmp_path / "out")
    bench.share_translators(cells)
    return {cell.name: cell for cell in cells}


def test_a_stargan_of_every_domain_is_shared_by_every_task_of_a_seed(tmp_path):
    cells = stargan_benchmark(tmp_path)
    for seed in (0, 1):
        owner = cells[f"ab/stargan/seed{seed}"]  # source_only feature stage, fewest iterations, first task
        assert owner.owner is None
        lead = cells[f"ca/stargan/seed{seed}"]  # the other task's first cell: the task's own stages, its source
        assert lead.owner is owner and lead.after is None and lead.prerequisites == [owner]
        assert f"pixel_from={owner.run_dir}" in lead.arguments()
        assert cells[f"ab/stargan_long/seed{seed}"].prerequisites == [owner]
        assert cells[f"ca/stargan_long/seed{seed}"].prerequisites == [owner, lead]
        # the tasks' first cells write the translator's run directory one after another
        third = cells[f"bc/stargan/seed{seed}"]
        assert third.prerequisites == [owner, lead]
        assert cells[f"bc/stargan_long/seed{seed}"].prerequisites == [owner, third]
    assert cells["ca/stargan/seed1"].owner is cells["ab/stargan/seed1"]  # a translator per seed


@pytest.mark.parametrize("change", [
    "pixel.domains=[toy_source,toy_target]",  # toy_third (ca's source) not listed: its role would decide
    "pixel.semantic_weight=0.5",  # G learns from f_S, trained on the task's labeled source
])
def test_a_translator_that_depends_on_the_task_is_shared_within_the_task_only(tmp_path, change):
    cells = stargan_benchmark(tmp_path, method_overrides={"stargan": [change], "stargan_long": [change]})
    for seed in (0, 1):
        for task in TASKS:
            assert cells[f"{task}/stargan/seed{seed}"].owner is None
            assert cells[f"{task}/stargan_long/seed{seed}"].owner is cells[f"{task}/stargan/seed{seed}"]
    assert all(cell.after is None for cell in cells.values())


def test_cells_with_another_domains_list_train_their_own_translator(tmp_path):
    """stargan_long lists the domains in another order (other domain labels): its cells share one translator
    of their own across the tasks, never stargan's."""
    cells = stargan_benchmark(tmp_path, method_overrides={"stargan_long": ["pixel.domains=[toy_third,toy_source,"
                                                                           "toy_target]"]})
    for seed in (0, 1):
        owner = cells[f"ab/stargan_long/seed{seed}"]
        assert owner.owner is None and cells[f"ca/stargan_long/seed{seed}"].owner is owner
        assert cells[f"ca/stargan/seed{seed}"].owner is cells[f"ab/stargan/seed{seed}"]


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """The four cells of seed 0 run in the grid's order (the other task's through pixel_from), and task ca's
    StarGAN trained on its own."""
    torch.set_num_threads(1)
    tmp_path = tmp_path_factory.mktemp("shared")
    cells = stargan_benchmark(tmp_path)
    metrics = {}
    for name in ("ab/stargan/seed0", "ca/stargan/seed0", "ab/stargan_long/seed0", "ca/stargan_long/seed0"):
        cell = cells[name]
        assert all(p.finished for p in cell.prerequisites), name
        metrics[name] = run(recipe_from_dict(cell.expected_recipe), cell.run_dir, progress=False)
    alone = tmp_path / "ca_alone"
    own = toy_recipe_dict(data=task_data("ca"), pixel=SHARED_PIXEL, train={"iterations": 3})
    metrics["alone"] = run(recipe_from_dict(own), alone, progress=False)
    return cells, metrics, alone


def test_the_shared_translator_is_the_one_the_other_task_would_train(shared_runs):
    """The sharing is exact: task ca's StarGAN trained on its own equals the one task ab's cell trained."""
    cells, _, alone = shared_runs
    shared = load_checkpoint(cells["ab/stargan/seed0"].run_dir / "checkpoints" / "pixel.pt")["state"]
    own = load_checkpoint(alone / "checkpoints" / "pixel.pt")["state"]
    for network in ("generator", "discriminator"):
        for name, value in shared[network].items():
            assert torch.equal(value, own[network][name]), (network, name)


def test_the_other_tasks_cells_translate_their_source_into_their_target_and_keep_their_own_stages(shared_runs,
                                                                                                tmp_path):
    cells, metrics, alone = shared_runs
    home = cells["ab/stargan/seed0"].run_dir
    lead, later = cells["ca/stargan/seed0"].run_dir, cells["ca/stargan_long/seed0"].run_dir
    assert not (lead / "checkpoints" / "pixel.pt").exists() and not (later / "checkpoints" / "pixel.pt").exists()
    # f_S of ca's source and the oracle of ca's target beside the translator, trained by ca's first cell
    stages = {path.stem for path in (home / "checkpoints").glob("pixel*.pt")}
    assert stages == {"pixel", "pixel_classifier_toy_source", "pixel_oracle_toy_target",
                      "pixel_classifier_toy_third", "pixel_oracle_toy_source"}
    for stage in ("pixel_classifier_toy_third", "pixel_oracle_toy_source"):  # as the task would train them alone
        ours, theirs = (load_checkpoint(folder / "checkpoints" / f"{stage}.pt")["state"]["classifier"]
                        for folder in (home, alone))
        assert all(torch.equal(value, theirs[name]) for name, value in ours.items()), stage
    assert metrics["ca/stargan/seed0"]["label_preservation"] == metrics["alone"]["label_preservation"]
    assert metrics["ca/stargan/seed0"]["target_accuracy"] == metrics["alone"]["target_accuracy"]
    # ca's source (toy_third) translated by G(·, c = toy_source): a miss for the first cell, a hit after it
    pixel = {name: metrics[name]["stages"]["pixel"] for name in ("ca/stargan/seed0", "ca/stargan_long/seed0")}
    assert [p["translation_cache"] for p in pixel.values()] == ["miss", "hit"]
    adapter = StarGAN(StarGANOptions(**{**TINY, "domains": EVERY_DOMAIN}),
                      AdapterSetup(None, 16, 1, 0, None, None, ("toy_third", "toy_source")))
    into_source = weights_hash(adapter.load_generator(RunDir(home), "toy_source"))
    assert {p["translation_cache_file"][:len("translated_") + 16] for p in pixel.values()} == {
        f"translated_{into_source}"}
    # `translate --to` on the sharing run reads the owner's translator
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(folder / "0.png")
    result = CliRunner().invoke(main, ["translate", str(later), "--input", str(folder), "--output",
                                       str(tmp_path / "out"), "--to", "toy_source"])
    assert result.exit_code == 0 and "translated 1 images (toy_source)" in result.output, result.output
    expected = translate_images(adapter.load_generator(RunDir(home), "toy_source"), read_png(folder / "0.png")[None],
                                torch.device("cpu"), 8)
    assert torch.equal(read_png(tmp_path / "out" / "0.png")[None], expected)


# ------------------------------------------------------------------ several sources (data.extra_sources)


def two_source_data(**source) -> dict:
    """toy_source (100 images) and toy_third (50) -> toy_target."""
    return {"source": {"name": "toy_source", "limit": 100, **source},
            "extra_sources": [{"name": "toy_third", "limit": 50}]}


def test_several_sources_are_merged_into_one_labeled_set_in_order(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(data=two_source_data()))
    domains = build_domains(recipe.data, recipe.seed)
    first = build_domain(recipe.data.source, 16, 1, recipe.seed)
    second = build_domain(recipe.data.extra_sources[0], 16, 1, recipe.seed)
    assert len(domains.source) == 150 and domains.source.name == f"{first.name}+{second.name}"
    assert torch.equal(domains.source.images, torch.cat([first.images, second.images]))
    assert torch.equal(domains.source.labels, torch.cat([first.labels, second.labels]))
    assert (domains.source.labels >= 0).all()  # every source is labeled
    assert recipe_from_dict(recipe.to_dict()).data.extra_sources == recipe.data.extra_sources  # recipe.yaml


def test_a_source_listed_twice_or_with_other_classes_is_refused(tmp_path):
    twice = toy_recipe_dict(data={**two_source_data(), "extra_sources": [{"name": "toy_third"},
                                                                         {"name": "toy_third", "limit": 3}]})
    with pytest.raises(UserError, match=r"data.extra_sources\[1\]: toy_third \(train split\) is already a source "
                                        r"\(data.extra_sources\[0\]\)"):
        recipe_from_dict(twice)
    with pytest.raises(UserError, match=r"data.extra_sources\[0\]: toy_source .* already a source \(data.source\)"):
        recipe_from_dict(toy_recipe_dict(data={"extra_sources": [{"name": "toy_source"}]}))
    assert recipe_from_dict(toy_recipe_dict(data={"extra_sources": [{"name": "toy_source", "split": "test"}]}))
    with pytest.raises(UserError, match=r"data.extra_sources\[0\].name: unknown dataset 'toy_fiev'"):
        recipe_from_dict(toy_recipe_dict(data={"extra_sources": [{"name": "toy_fiev"}]}))
    recipe = recipe_from_dict(toy_recipe_dict(data={"extra_sources": [{"name": "toy_five"}]}))
    with pytest.raises(UserError, match=r"data.extra_sources\[0\]: toy_five/train lacks 5 of the source's classes "
                                        r"\(5, 6, 7, 8, 9\); every source must have the same class names"):
        build_domains(recipe.data, recipe.seed)


def test_one_stargan_translates_each_source_into_the_target(tmp_path):
    """G learns toy_source, toy_third and toy_target as three domains; the merged labeled set (150 images) is
    translated by G(·, c = toy_target), and f_S learns the merged set."""
    pixel = {"adapter": "stargan", **TINY, "iterations": 2, "batch_size": 4, "n_critic": 2, "label_filter": "drop",
             "semantic_classifier_iterations": 2}
    recipe = recipe_from_dict(toy_recipe_dict(data=two_source_data(), pixel=pixel, train={"iterations": 2}))
    metrics = run(recipe, tmp_path, progress=False)
    assert metrics["task"] == "toy_source+toy_third->toy_target"
    assert metrics["label_filter"]["total"] == 150  # every image of both sources translated
    adapter = StarGAN(recipe.pixel.options, AdapterSetup.from_recipe(recipe))
    assert adapter.domains == ["toy_source", "toy_third", "toy_target"]
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "pixel.pt")["state"]
    assert set(checkpoint) >= {"stream_0", "stream_1", "stream_2"}
    into_target = weights_hash(adapter.load_generator(RunDir(tmp_path), "toy_target"))
    assert metrics["stages"]["pixel"]["translation_cache_file"].startswith(f"translated_{into_target}_")
    assert (tmp_path / "checkpoints" / "pixel_classifier_toy_source+toy_third.pt").exists()
    # the cached translation is G(·, c = toy_target) of each source's images, in the merged set's order
    domains = build_domains(recipe.data, recipe.seed)
    learned = adapter.training_domains(domains.source, domains.target)  # each source a domain of its own
    assert [len(domain) for domain in learned] == [100, 50, 400]
    assert torch.equal(torch.cat([learned[0].images, learned[1].images]), domains.source.images)
    generator = adapter.load_generator(RunDir(tmp_path), "toy_target")
    ctx = Context(tmp_path, progress=False)
    cached = CycleGANTranslator(generator, ctx, recipe.pixel.options).translate_only(domains.source)
    assert ctx.metrics["pixel"]["translation_cache"] == "hit"
    assert torch.equal(cached.labels, domains.source.labels)
    for part in (slice(0, 100), slice(100, 150)):  # toy_source's images, then toy_third's
        expected = translate_images(generator, domains.source.images[part], torch.device("cpu"), 64)
        assert torch.equal(cached.images[part], expected)
    # sharing: the merged sources are in the sharing key, each by name unless every domain is listed
    shared = StarGAN(StarGANOptions(**{**TINY, "domains": ["toy_source", "toy_third", "toy_target"]}),
                     AdapterSetup.from_recipe(recipe))
    data = recipe.to_dict()["data"]
    assert shared.serves_every_task
    assert shared.translator_data(data)["extra_sources"] == [{k: v for k, v in data["extra_sources"][0].items()
                                                              if k != "name"}]


def test_a_feature_method_on_several_sources_trains_on_the_merged_set(tmp_path, monkeypatch):
    recipe = recipe_from_dict(toy_recipe_dict(data=two_source_data(), train={"iterations": 2}))
    trained_on = []
    monkeypatch.setattr(SourceOnly, "fit", lambda self, classifier, source, target, ctx: (
        trained_on.append(source), classifier)[1])
    metrics = run(recipe, tmp_path, progress=False)
    assert metrics["task"] == "toy_source+toy_third->toy_target"
    [source] = trained_on
    assert len(source) == 150 and source.name == "toy_source/train+toy_third/train"
