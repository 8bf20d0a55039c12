"""Per-iteration curves of a DANN run: source CE, domain loss, discriminator logit scale, feature norm.

    OMP_NUM_THREADS=1 DA_TOOLKIT_DATA=../shared/data python benchmarks/results/dann-dtn/diagnose.py \
        OUT.json RECIPE STOP_AT [key=value ...]

Runs the recipe's feature stage (budget: train.iterations) and stops after STOP_AT iterations,
recording every iteration: loss/source_ce, loss/domain, the mean |logit| of the discriminator and
the mean L2 norm of the bottleneck features it sees, and the mean per-sample gradient norm that the
classification loss and the domain loss (before the reversal's −λ) send to those features.
"""
from __future__ import annotations

import json
import sys
import tempfile

import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.context import Context
from da_toolkit.data import build_domains
from da_toolkit.models import DomainDiscriminator, create_classifier
from da_toolkit.pipeline import seed_everything
from da_toolkit.recipe import load_recipe


class Stop(Exception):
    pass


def main(out: str, recipe_path: str, stop_at: int, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    recipe = load_recipe(recipe_path, overrides)
    seed_everything(recipe.seed)
    domains = build_domains(recipe.data, recipe.seed)
    classifier = create_classifier(recipe.classifier.backbone, recipe.data.channels, recipe.data.image_size,
                                   10, recipe.classifier.bottleneck_dim)
    rows: list[dict] = []
    seen: dict = {}
    forward = DomainDiscriminator.forward

    def recording_forward(self, features):
        logits = forward(self, features)
        seen["feature_norm"] = float(features.detach().norm(dim=1).mean())
        seen["logit_scale"] = float(logits.detach().abs().mean())
        if features.requires_grad:  # the gradient of the domain loss at the discriminator's input (before R_λ)
            features.register_hook(lambda grad: seen.__setitem__("domain_grad_norm", float(grad.norm(dim=1).mean())))
        return logits

    def record_head_input(module, inputs):
        if inputs[0].requires_grad:  # the gradient of the classification loss at the features
            inputs[0].register_hook(lambda grad: seen.__setitem__("ce_grad_norm", float(grad.norm(dim=1).mean())))

    DomainDiscriminator.forward = recording_forward
    classifier.head.register_forward_pre_hook(record_head_input)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(tmp, seed=recipe.seed, log_every=1, checkpoint_every=10**9, progress=False)

        def log_scalars(stage, step, scalars):
            rows.append({"iteration": step, **{k: round(float(v), 5) for k, v in scalars.items()}, **seen})
            if step % 50 == 0:
                print(json.dumps(rows[-1]), flush=True)
            if step >= stop_at:
                raise Stop

        ctx.log_scalars = log_scalars
        try:
            ADAPTERS.get(recipe.feature.adapter)(recipe.feature.options, recipe).fit(
                classifier, domains.source, domains.target, ctx)
        except Stop:
            pass
    with open(out, "w") as f:
        json.dump({"recipe": recipe_path, "overrides": overrides, "rows": rows}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
