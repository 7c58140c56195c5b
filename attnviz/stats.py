"""Parameter and FLOP counts, measured (``torch.utils.flop_counter``), never estimated by hand."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass on one image (a multiply-add counts 2, as torch's counter does).

    Counts convolutions and matrix products (what ``FlopCounterMode`` registers); element-wise ops
    (BN, activations, gating) are not counted, as in the papers' tables. Divide by 2 for MACs.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.zeros(1, *input_size, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
