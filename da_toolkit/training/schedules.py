"""Learning-rate and coefficient schedules, as plain functions of training progress.

Each LR schedule returns the factor that multiplies the base learning rate (for LambdaLR).
"""
from __future__ import annotations

import math
from typing import Callable


def annealed(progress: float, gamma: float = 10.0, power: float = 0.75) -> float:
    """DANN's annealing: lr_p / lr_0 = (1 + gamma p)^(-power), p in [0, 1]."""
    return (1.0 + gamma * progress) ** (-power)


def cosine(progress: float) -> float:
    """Half a cosine from 1 to 0: (1 + cos(pi p)) / 2."""
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def linear_decay(iteration: int, constant: int, decay: int) -> float:
    """CycleGAN's schedule: 1 for `constant` iterations, then linearly to 0 over `decay` iterations."""
    if decay <= 0:
        return 1.0
    return 1.0 - max(0, iteration - constant) / float(decay)


def step_decay(iteration: int, step_size: int, gamma: float = 0.1) -> float:
    """gamma^floor(iteration / step_size)."""
    return gamma ** (iteration // max(step_size, 1))


def grl_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's reversal coefficient: lambda_p = 2 / (1 + exp(-gamma p)) - 1, rising from 0 to ~1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def inverse_decay(iteration: int, gamma: float = 0.001, power: float = 0.75) -> float:
    """Per-iteration inverse decay: lr_i / lr_0 = (1 + gamma i)^(-power), whatever the run's length."""
    return (1.0 + gamma * iteration) ** (-power)


def lr_factor(policy: str, iterations: int, gamma: float = 0.001, power: float = 0.75) -> Callable[[int], float]:
    """The LambdaLR factor of a classifier LR policy (constant | anneal | cosine | inverse) over
    `iterations`; `gamma` and `power` are those of `inverse`."""
    total = max(iterations, 1)
    policies = {
        "constant": lambda i: 1.0,
        "anneal": lambda i: annealed(i / total),
        "cosine": lambda i: cosine(i / total),
        "inverse": lambda i: inverse_decay(i, gamma, power),
    }
    return policies[policy]
