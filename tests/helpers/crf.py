"""A case for a dense CRF: two flat colours split down the middle and a network's noisy answer about them."""
import torch


def two_halves(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1, 3, h, w) uint8, probabilities (1, 2, h, w), truth (h, w)): the right half is colour 200 and class
    1; the probabilities are the truth plus noise, right for about two pixels in three."""
    image = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    image[..., w // 2:] = 200
    truth = (torch.arange(w) >= w // 2).long().expand(h, w)
    noise = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(seed))
    probs = torch.softmax(noise + 0.6 * torch.nn.functional.one_hot(truth, 2).permute(2, 0, 1), 1)
    return image, probs, truth
