"""Mean teacher for domain adaptation: self-ensembling (French, Mackiewicz & Fisher, ICLR 2018).

The student is the shared classifier; the teacher a copy whose weights follow the student's as an
exponential moving average, θ' ← α θ' + (1 − α) θ after every step (`ema_update`). Each step
(`adapters/self_training.py`) the student sees a source batch and one weak view of a target batch
(as two separate batches: each domain normalised by its own batch statistics, as the paper does),
the teacher (in training mode, without gradients) another weak view of the same target batch:

    L = CE(z_s, y_s) + trade_off · [ L_con(z_student, z_teacher; τ)
                                     + class_balance · mask rate · L_bal(z_student) ]

with L_con the confidence-masked squared difference of the two softmax predictions and L_bal the
binary cross-entropy of the batch-mean student prediction against uniform (training/self_training.py;
the class-balance term is scaled by the share of confident images, as in the authors' code).
The teacher is part of the stage's checkpoint (a resumed run is bit-identical), is the candidate
that model selection scores, and is what the stage returns, as the paper evaluates it: its weights
(and its own batch-norm statistics) are copied into the shared classifier at the end. Logged:
``self_training/mask_rate``, the share of target images the teacher predicts with confidence ≥ τ.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.self_training import SelfTraining, SelfTrainingOptions
from da_toolkit.errors import UserError
from da_toolkit.training.self_training import class_balance_loss, confident_consistency_loss, ema_update


@dataclass
class MeanTeacherOptions(SelfTrainingOptions):
    """The recipe keys of `adapter: mean_teacher`; defaults: the paper's (its code's) small-image settings."""

    threshold: float = 0.968  # τ on the teacher's confidence (the paper's 0.968)
    trade_off: float = 3.0  # weight of the unsupervised (consistency + class balance) loss (the authors' 3)
    class_balance: float = 0.005  # weight of the class-balance term inside it (the authors' 0.005)
    teacher_decay: float = 0.99  # α of the teacher's moving average (the paper's 0.99)

    def __post_init__(self):
        super().__post_init__()
        if self.class_balance < 0:
            raise UserError(f"feature.class_balance: must be zero or more, got {self.class_balance}")
        if not 0 <= self.teacher_decay < 1:
            raise UserError(f"feature.teacher_decay: must lie in [0, 1), got {self.teacher_decay}")


@ADAPTERS.register("mean_teacher")
class MeanTeacher(SelfTraining):
    """Mean teacher (self-ensembling): a moving-average teacher's confident target predictions teach the student."""

    Options = MeanTeacherOptions

    def start(self, classifier, ctx):
        self.teacher = copy.deepcopy(classifier).requires_grad_(False).train()
        return {"teacher": self.teacher}

    def target_loss(self, training, source_images, source_labels, target_images):
        o = self.options
        student_view, teacher_view = self.weak(target_images), self.weak(target_images)
        source_logits = training.parallel_classifier(source_images)
        student_logits = training.parallel_classifier(student_view)
        teacher_logits = self.teacher(teacher_view)  # no gradient: its parameters do not require one
        loss, scalars = training.classification_loss(source_logits, source_labels)
        consistency, mask_rate = confident_consistency_loss(student_logits, teacher_logits, o.threshold)
        balance = class_balance_loss(student_logits)
        unsupervised = consistency + o.class_balance * mask_rate * balance
        scalars.update({"loss/consistency": consistency.detach(), "loss/class_balance": balance.detach(),
                        "self_training/mask_rate": mask_rate})
        return loss + o.trade_off * unsupervised, scalars

    def after_update(self, classifier):
        ema_update(self.teacher, classifier, self.options.teacher_decay)

    def returned(self, classifier):
        return self.teacher
