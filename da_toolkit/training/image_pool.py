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
    Random draws come from the pool's own CPU generator, so `state_dict` / `load_state_dict` make a
    resumed run draw exactly what an uninterrupted one would, on any device: the stored images
    live on `device` (where the generators run) and are checkpointed on the CPU.
    """

    def __init__(self, size: int = 50, seed: int = 0, device: torch.device | str = "cpu"):
        if size < 0:
            raise ValueError(f"pool size must be zero or more, got {size}")
        self.size = size
        self.device = torch.device(device)
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
        """The stored images (one N×C×H×W tensor on the CPU) and the generator state (a CPU ByteTensor)."""
        stored = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"images": stored, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Takes the tensors of `state` on any device; the images go to the pool's device."""
        images = state["images"]
        self.images = list(images.to(self.device).unbind(0)) if images.numel() else []
        self.generator.set_state(state["generator"].cpu())
