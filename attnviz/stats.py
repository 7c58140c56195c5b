"""Parameter and FLOP counts, measured (``torch.utils.flop_counter``), never estimated by hand."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnviz.layers.create_attn import list_attentions
from attnviz.models.interflow import MODES
from attnviz.models.registry import create_model, list_archs
from attnviz.paper_tables import paper_params


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


def params_table(archs=None, attentions=None, class_counts=(10, 100), include_interflow: bool = True) -> list[dict]:
    """Measured params and FLOPs for every backbone x attention (x class count), with the paper's figure.

    Each row: spec, num_classes, params, params_m, flops, mflops, paper_params_m, paper_source, delta_m.
    """

    archs = archs or list_archs()
    attentions = attentions or ([a for a in list_attentions()] + ["se-felu"])
    rows = []
    for arch in archs:
        specs = [arch if a == "none" else f"{arch}-{a}" for a in attentions]
        if include_interflow:
            specs += [f"{arch}-interflow-{mode}" for mode in MODES]
        for num_classes in class_counts:
            for spec in specs:
                model = create_model(spec, num_classes=num_classes)
                params = count_params(model)
                flops = count_flops(model)
                paper = paper_params(spec, num_classes)
                rows.append({
                    "spec": spec,
                    "num_classes": num_classes,
                    "params": params,
                    "params_m": round(params / 1e6, 3),
                    "flops": flops,
                    "mflops": round(flops / 1e6, 1),
                    "paper_params_m": paper[0] if paper else None,
                    "paper_source": paper[1] if paper else None,
                    "delta_m": round(params / 1e6 - paper[0], 3) if paper else None,
                })
                del model
    return rows


def init_stage_std(spec: str, stage: str = "layer3", images: int = 64, seed: int = 0) -> float:
    """Standard deviation of one stage's output for a freshly initialised ``spec`` on random inputs.

    Train mode (BatchNorm normalises with the batch's own statistics, as in the first training step);
    weights from ``torch.manual_seed(seed)``, inputs ``images`` standard-normal 32x32 pictures from
    ``seed + 1``. How much a module amplifies the features at initialisation (LGAM, issue 11):
    ``scripts/init_scale_probe.py`` prints it for the specs the LGAM docs cite.
    """
    torch.manual_seed(seed)
    model = create_model(spec).train()
    seen: list[float] = []

    def record(module, inputs, output):
        seen.append(float(output.detach().std()))

    handle = model.get_submodule(stage).register_forward_hook(record)
    try:
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            model(torch.randn(images, 3, 32, 32))
    finally:
        handle.remove()
    return seen[0]
