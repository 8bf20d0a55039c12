"""da-toolkit: domain adaptation of image classifiers (CycleGAN, DANN, ADDA on one timm classifier)."""

__version__ = "0.1.0"
