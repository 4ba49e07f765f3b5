"""The table of torchvision models of docs/convert.md: what pnn_ext.convert turns into polynomials
and what pnn_ext.polynomial_report says remains (untrained models, weights=None,
10 classes, a batch of two 3x32x32 images; ViT-B/16 built for 32x32, 2x2 patches).

    python experiments/convert/convert_table.py            # Markdown table on stdout
    python experiments/convert/convert_table.py | python experiments/docs_section.py docs/convert.md convert-zoo
"""
from __future__ import annotations

import argparse
from collections import Counter

import torch
import torchvision

import pnn_ext
from pnn_ext.nn import poly_modules

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "densenet121",
          "squeezenet1_0", "vit_b_16", "convnext_tiny"]


def _ops(counter: Counter) -> str:
    return ", ".join(f"{op} ×{n}" for op, n in counter.most_common()) or "nothing"


def row(name: str, degree: int) -> str:
    kw = {"image_size": 32} if name.startswith("vit") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kw)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = pnn_ext.polynomial_report(model, x)
    converted = pnn_ext.convert(model, degree=degree, max_pool="avg")  # he_ready=True, without raising
    after = pnn_ext.polynomial_report(converted, x)
    targets = Counter(m.target for m in poly_modules(converted))
    graph = "GraphModule" if isinstance(converted, torch.fx.GraphModule) else "same module"
    return (f"| `{name}` | {_ops(before.ops())} | {after.polynomial_calls} calls, {after.polynomial_layers} modules "
            f"({', '.join(f'{t} ×{n}' for t, n in targets.most_common())}); {graph} | {_ops(after.ops())} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--degree", type=int, default=8)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    print("| model | not polynomial before | `convert(max_pool=\"avg\")` makes polynomial | the report: what remains |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        print(row(name, args.degree))


if __name__ == "__main__":
    main()
