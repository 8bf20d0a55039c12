"""Networks: the shared classifier, the digit backbones (registered into timm) and CycleGAN's nets."""
from da_toolkit.models.classifier import DomainClassifier, check_backbone, create_classifier
from da_toolkit.models.digit_backbones import BACKBONES

__all__ = ["BACKBONES", "DomainClassifier", "check_backbone", "create_classifier"]
