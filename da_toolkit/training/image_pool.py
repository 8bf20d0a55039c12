"""CycleGAN's history of generated images (Shrivastava et al., 2017), as in the reference implementation.

The discriminator is updated with fakes drawn from a pool of earlier generator outputs rather
than only the latest batch, which damps oscillation between generator and discriminator.
"""
from __future__ import annotations

import torch


class ImagePool:
    """A history of up to `size` generated images; ``size = 0`` disables it (`query` returns its input).

    `query(images)` goes through the batch one image at a time: while the pool is not full the
    image is stored and returned; once full, with probability ½ the image replaces a random
    stored one and the stored image is returned, otherwise the image itself is returned.
    Random draws come from the pool's own generator, so `state_dict` / `load_state_dict` make a
    resumed run draw exactly what an uninterrupted one would.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        if size < 0:
            raise ValueError(f"pool size must be zero or more, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch like `images` (detached), mixing new images and stored ones."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        stored = torch.stack(self.images) if self.images else torch.empty(0)
        return {"images": stored, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"].unbind(0)) if state["images"].numel() else []
        self.generator.set_state(state["generator"].cpu())
