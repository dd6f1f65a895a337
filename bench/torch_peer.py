#!/usr/bin/env python3
"""PyTorch peers for `npm run bench` (CPU, float32).

  mghf-n  MGHF-n (SPEC §2–3) written plainly in PyTorch: the DFE as an nn.Module with the SPEC §9
          parameter names, loss mean((DFE(sr) - DFE(gt))**2), autograd w.r.t. sr.
  vgg16   VGG16 perceptual loss: torchvision's VGG16 `features` written out by hand (random init,
          nothing is downloaded), ImageNet normalisation, MSE summed over relu1_2, relu2_2,
          relu3_3, relu4_3 and relu5_3, autograd w.r.t. sr.

The timed region is what the library does per call: the feature pass of gt (no_grad: gt is a
constant), the feature pass of sr, the loss and the backward pass to sr.

  python3 bench/torch_peer.py --peer all --batch 1 --size 256 256 --threads 2 --repeat 5 --json
  python3 bench/torch_peer.py --check /work/shared/fixtures/n-default

--check computes MGHF-n in float64 on a fixture folder (case.json, sr.f32, gt.f32,
weights.safetensors, grad.f32) and prints the relative error of loss and gradient; it shows that
this peer computes the same function as the library.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x):
    # Constants made in x's dtype, so the float64 check does not inherit float32-rounded ones.
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------
# MGHF-n (SPEC §2–3)


class IRB(nn.Module):
    """Inverted residual block c -> h -> c, no biases (SPEC §2)."""

    def __init__(self, c, h):
        super().__init__()
        self.expand = nn.Conv2d(c, h, 1, bias=False)
        self.depthwise = nn.Conv2d(h, h, 3, groups=h, bias=False)
        self.project = nn.Conv2d(h, c, 1, bias=False)
        self.pad = nn.ReflectionPad2d(1)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.act(self.expand(x))
        x = self.act(self.depthwise(self.pad(x)))
        return self.project(x)


class DetailNode(nn.Module):
    """One affine coupling block (CDDFuse's DetailNode, SPEC §2 step 4)."""

    def __init__(self, n, expand):
        super().__init__()
        c = n // 2
        h = expand * c
        self.mix = nn.Conv2d(n, n, 1, bias=True)
        self.phi = IRB(c, h)
        self.rho = IRB(c, h)
        self.eta = IRB(c, h)

    def forward(self, z1, z2):
        y = self.mix(torch.cat((z1, z2), dim=1))
        c = y.shape[1] // 2
        z1, z2 = y[:, :c], y[:, c:]
        z2 = z2 + self.phi(z1)
        z1 = z1 * torch.exp(self.rho(z2)) + self.eta(z2)
        return z1, z2


class DFE(nn.Module):
    def __init__(self, channels=128, blocks=1, expand=2):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=True)
        self.inn = nn.ModuleList([DetailNode(channels, expand) for _ in range(blocks)])

    def forward(self, x):
        z = self.stem(normalise(x))
        c = z.shape[1] // 2
        z1, z2 = z[:, :c], z[:, c:]
        for node in self.inn:
            z1, z2 = node(z1, z2)
        return torch.cat((z1, z2), dim=1)


def mghf_n_loss(dfe, sr, gt):
    with torch.no_grad():
        g = dfe(gt)
    s = dfe(sr)
    return torch.mean((s - g) ** 2)


def read_safetensors(path):
    """Minimal safetensors reader (F32 only): returns (tensors, metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = blob[8 + n :]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return tensors, meta


def load_dfe(path):
    tensors, meta = read_safetensors(path)
    dfe = DFE(int(meta.get("channels", 128)), int(meta.get("blocks", 1)), int(meta.get("expand", 2)))
    dfe.load_state_dict(tensors, strict=True)
    return dfe


# ---------------------------------------------------------------------------------------------
# VGG16 perceptual loss

# torchvision's vgg16 `features`: numbers are conv output channels, "M" a 2x2 max pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_TAPS = (3, 8, 15, 22, 29)


class VGG16Features(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        x = normalise(x)
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x)
                if i == VGG16_TAPS[-1]:
                    break
        return taps


def vgg16_loss(vgg, sr, gt):
    with torch.no_grad():
        g = vgg(gt)
    s = vgg(sr)
    return sum(torch.mean((a - b) ** 2) for a, b in zip(s, g))


# ---------------------------------------------------------------------------------------------
# Inputs and timing


def make_inputs(batch, height, width, seed=0):
    """gt smooth-ish in [0, 1]; sr = gt + small noise, clamped."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 8), max(2, width // 8), generator=gen)
    gt = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    gt = (gt + 0.05 * torch.rand(batch, 3, height, width, generator=gen)).clamp(0, 1)
    sr = (gt + 0.02 * torch.randn(batch, 3, height, width, generator=gen)).clamp(0, 1)
    return sr.contiguous(), gt.contiguous()


def build_peer(name, weights):
    torch.manual_seed(0)
    if name == "mghf-n":
        model = load_dfe(weights) if weights else DFE()
        return model.eval(), mghf_n_loss
    if name == "vgg16":
        return VGG16Features().eval(), vgg16_loss
    raise ValueError(f"unknown peer {name}")


def time_peer(name, args):
    model, loss_fn = build_peer(name, args.weights)
    for p in model.parameters():
        p.requires_grad_(False)  # gradient w.r.t. the input only, as the library
    sr0, gt = make_inputs(args.batch, args.size[0], args.size[1])

    def step():
        sr = sr0.clone().requires_grad_()
        loss = loss_fn(model, sr, gt)
        loss.backward()
        return sr.grad

    for _ in range(args.warmup):
        step()
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step()
        runs.append(time.perf_counter() - t0)
    return {
        "peer": name,
        "batch": args.batch,
        "height": args.size[0],
        "width": args.size[1],
        "threads": args.threads,
        "median_s": statistics.median(runs),
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# Fixture check (float64)


def check(folder):
    with open(os.path.join(folder, "case.json")) as f:
        case = json.load(f)
    opts = case.get("options", {})
    if opts.get("variant", "c") != "n":
        raise SystemExit(f"{folder}: --check handles MGHF-n cases only (variant is {opts.get('variant', 'c')!r})")
    dims = case["dims"]

    def raw(name):
        arr = np.fromfile(os.path.join(folder, name), dtype="<f4").reshape(dims)
        return torch.from_numpy(arr.astype(np.float64))

    sr, gt, grad_ref = raw("sr.f32"), raw("gt.f32"), raw("grad.f32")
    if opts.get("inputRange") == "symmetric":
        to_unit = lambda x: (x + 1) / 2  # noqa: E731 — SPEC §1; the chain rule keeps the 1/2
    else:
        to_unit = lambda x: x  # noqa: E731
    dfe = load_dfe(os.path.join(folder, "weights.safetensors")).double().eval()
    sr = sr.requires_grad_()
    loss = mghf_n_loss(dfe, to_unit(sr), to_unit(gt))
    loss.backward()
    exp_loss = case["expected"]["loss"]
    loss_rel = abs(loss.item() - exp_loss) / abs(exp_loss)
    grad_rel = (torch.linalg.norm(sr.grad - grad_ref) / torch.linalg.norm(grad_ref)).item()
    norm_rel = abs(torch.linalg.norm(sr.grad).item() - case["expected"]["gradNorm"]) / case["expected"]["gradNorm"]
    result = {
        "case": os.path.basename(os.path.normpath(folder)),
        "loss": loss.item(),
        "expected_loss": exp_loss,
        "loss_rel_err": loss_rel,
        "grad_rel_err": grad_rel,
        "grad_norm_rel_err": norm_rel,
    }
    print(json.dumps(result))
    # SPEC §8 tolerances (the float32 rounding of grad.f32 is far below 1e-3).
    ok = abs(loss.item() - exp_loss) <= 1e-4 * abs(exp_loss) + 1e-7 and grad_rel <= 1e-3
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=("mghf-n", "vgg16", "all"), default="all")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--weights", help="DFE weights (SPEC §9 safetensors) for the mghf-n peer")
    ap.add_argument("--json", action="store_true", help="one JSON line per peer")
    ap.add_argument("--check", metavar="DIR", help="compare MGHF-n (float64) with a fixture folder")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.check:
        return check(args.check)

    peers = ("mghf-n", "vgg16") if args.peer == "all" else (args.peer,)
    for name in peers:
        r = time_peer(name, args)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(
                f"{name:7s} B={r['batch']} {r['height']}x{r['width']} threads={r['threads']}: "
                f"median {r['median_s'] * 1e3:.1f} ms over {len(r['runs'])} runs",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
