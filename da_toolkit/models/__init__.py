"""Networks: the shared classifier, the digit backbones (registered into timm), CycleGAN's nets and the
DANN/ADDA domain discriminator."""
from da_toolkit.models.classifier import DomainClassifier, check_backbone, create_classifier
from da_toolkit.models.cyclegan import PatchDiscriminator, ResnetGenerator
from da_toolkit.models.digit_backbones import BACKBONES
from da_toolkit.models.domain_discriminator import DomainDiscriminator

__all__ = ["BACKBONES", "DomainClassifier", "DomainDiscriminator", "PatchDiscriminator", "ResnetGenerator",
           "check_backbone", "create_classifier"]
