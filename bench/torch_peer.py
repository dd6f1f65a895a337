#!/usr/bin/env python3
"""PyTorch peers for `npm run bench` (float32; CPU by default, `--device cuda` on GPU 0).

  mghf-n  MGHF-n (SPEC §2–3) written plainly in PyTorch: the DFE as an nn.Module with the SPEC §9
          parameter names, loss mean((DFE(sr) - DFE(gt))**2), autograd w.r.t. sr.
  mghf-c  MGHF-c (SPEC §4–7) on top of the same DFE: adaptive weighting (256-bin histogram entropy,
          top-M, weights (1+αI)^γ, all under no_grad), CSC (MSE, CDDFuse's cc, channel Gram) and LIP
          (modulated PatchNCE on every channel: unfold, L2-normalise, sim by torch.bmm, Sinkhorn
          "hard" with 50 iterations unrolled and differentiated by autograd, cross-entropy summed
          over patches), SPEC defaults, total Γ1·L_n + Γ2·L_csc + Γ3·L_lip, autograd w.r.t. sr.
  mghf-c-onednn  mghf-c with the LIP similarity GEMM (and its backward) run by oneDNN as a grouped
          conv1d instead of torch.bmm: Debian's torch 1.13 links the reference BLAS
          (BLAS_INFO=generic), where bmm runs at ~3–5 GFLOP/s; roughly what a BLAS-backed build does.
  vgg16   VGG16 perceptual loss: torchvision's VGG16 `features` written out by hand (random init,
          nothing is downloaded), ImageNet normalisation, MSE summed over relu1_2, relu2_2,
          relu3_3, relu4_3 and relu5_3, autograd w.r.t. sr.

The timed region is what the library does per call: the feature pass of gt (no_grad: gt is a
constant), the feature pass of sr, the loss and the backward pass to sr. On the CPU it is timed with
time.perf_counter. With --device cuda the model and the inputs live on the GPU and each call is timed
with torch.cuda.Event (default 3 warm-up calls, median of 20); torch.cuda.max_memory_allocated() is
reset after the warm-up and reported; cuDNN autotunes (cudnn.benchmark) and TF32 is off unless --tf32.
--compile wraps the loss function in torch.compile (any device); its first call (the compilation)
is timed apart, and if compiling fails the reason is reported and the peer is timed eager.

  python3 bench/torch_peer.py --peer all --batch 1 --size 256 256 --threads 2 --repeat 5 --json
  python3 bench/torch_peer.py --peer mghf-c --batch 1 --size 256 256 --threads 2
  python3 bench/torch_peer.py --peer mghf-n mghf-c --device cuda --batch 4 --size 256 256 --json
  python3 bench/torch_peer.py --peer mghf-c --device cuda --compile --batch 16 --size 128 128 --json
  python3 bench/torch_peer.py --check /work/shared/fixtures/n-default
  python3 bench/torch_peer.py --check /work/shared/fixtures/c-*

--check computes MGHF-n or MGHF-c (by the case's `variant`, default 'c') in float64 on a fixture folder (case.json, sr.f32, gt.f32,
weights.safetensors, grad.f32) and prints the relative error of the loss, of every part and of the gradient; it shows
that this peer computes the same function as the library. For MGHF-c the importance and the kept
maps come from float32 features, as in the library and the fixtures (SPEC §4, fixtures README).
"""

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

try:
    import numpy as np
except ImportError:  # only --weights and --check read files with it; a GPU machine's torch may come without
    np = None
import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x):
    # Constants made in x's dtype, so the float64 check does not inherit float32-rounded ones.
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
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
    if np is None:
        raise RuntimeError("reading safetensors needs numpy (pip install numpy)")
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
# MGHF-c (SPEC §4–7)

# SPEC §4–7 defaults, under the library's option names (SPEC §7).
C_DEFAULTS = {
    "gamma1": 2.0, "gamma2": 1.5, "gamma3": 1e-3,
    "beta1": 0.1333, "beta2": 1.0, "beta3": 0.1333,
    "M": 64, "alpha": 1.0, "gamma": 1.0,
    "patch": 32, "stride": 16, "pmax": 256,
    "tau": 0.07, "epsOt": 1.0, "Q": 1.0, "iters": 50, "sinkhornGrad": True,
}
CC_EPS = 1.1920929e-07  # float32 epsilon, as CDDFuse's cc (SPEC §5)


def map_entropy(f):
    """Normalised 256-bin histogram entropy of every map of f [B, N, H, W] -> [B, N] float64 (SPEC §4).

    Each map is binned over its own min-max range with t = (x - lo) / (hi - lo) in float32 and
    bin = min(255, floor(256·t)); a constant map has entropy 1."""
    b, n, h, w = f.shape
    x = f.detach().float().reshape(b * n, h * w)
    lo = x.min(dim=1, keepdim=True).values
    hi = x.max(dim=1, keepdim=True).values
    flat = ~(hi > lo)
    t = (x - lo) / torch.where(flat, torch.ones_like(hi), hi - lo)
    bins = torch.clamp(torch.floor(t * 256), max=255).long() + 256 * torch.arange(b * n, device=x.device).unsqueeze(1)
    counts = torch.bincount(bins.reshape(-1), minlength=b * n * 256).view(b * n, 256).double()
    p = counts / (h * w)
    ent = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=1) / math.log(256)
    ent[flat.squeeze(1)] = 1.0
    return ent.view(b, n)


def select_maps(g, s, o, selected=None):
    """Importance [B, N], kept indices [B, M] (ascending) and weights [B, M] (SPEC §4), no gradient."""
    with torch.no_grad():
        imp = ((1 - map_entropy(g)) + (1 - map_entropy(s))) / 2
        m = min(int(o["M"]), g.shape[1])
        if selected is None:
            # Largest importance first; ties to the smaller channel index (stable sort of -I).
            order = torch.sort(-imp, dim=1, stable=True).indices[:, :m]
            sel = torch.sort(order, dim=1).values
        else:
            sel = torch.as_tensor(selected, dtype=torch.long, device=imp.device)
        w = (1 + o["alpha"] * torch.gather(imp, 1, sel)) ** o["gamma"]
    return imp, sel, w


def safe_sqrt(a):
    """sqrt with its derivative at 0 taken as 0 (SPEC §5: a constant kept map gets no corr gradient)."""
    pos = a > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, a, torch.ones_like(a))), torch.zeros_like(a))


def csc_parts(g, s, sel, w, o):
    """L_mse, L_corr, L_gram on the weighted kept maps (SPEC §5); a β of 0 skips its sub-term."""
    b, _, h, wd = s.shape
    m = sel.shape[1]
    rows = torch.arange(b, device=s.device).unsqueeze(1)
    ww = w.to(s.dtype)[:, :, None, None]
    gw = g[rows, sel] * ww  # [B, M, H, W]
    sw = s[rows, sel] * ww
    parts = {}
    if o["beta1"]:
        parts["mse"] = torch.mean((sw - gw) ** 2)
    if o["beta2"]:
        # CDDFuse's cc: centred dot product over the product of the norms + eps, clamped to [-1, 1].
        x = gw.reshape(b, m, -1)
        y = sw.reshape(b, m, -1)
        x = x - x.mean(dim=-1, keepdim=True)
        y = y - y.mean(dim=-1, keepdim=True)
        cc = (x * y).sum(dim=-1) / (safe_sqrt((x * x).sum(dim=-1)) * safe_sqrt((y * y).sum(dim=-1)) + CC_EPS)
        parts["corr"] = 1 - torch.clamp(cc, -1.0, 1.0).mean()
    if o["beta3"]:
        x = gw.reshape(b, m, -1)
        y = sw.reshape(b, m, -1)
        norm = m * h * wd
        gram_g = torch.bmm(x, x.transpose(1, 2)) / norm
        gram_s = torch.bmm(y, y.transpose(1, 2)) / norm
        parts["gram"] = ((gram_s - gram_g) ** 2).sum() / (b * m)
    parts["csc"] = sum(o[f"beta{i}"] * parts[k] for i, k in ((1, "mse"), (2, "corr"), (3, "gram")) if k in parts)
    return parts


def lip_loss(g, s, o, gemm="bmm"):
    """L_lip: MoNCE's modulated PatchNCE on every channel of G and S (SPEC §6); returns (L_lip, P kept).

    gemm: "bmm" (torch.bmm, the plain way) or "onednn" (the same GEMM as a grouped conv1d, see
    bench/NOTES.md: Debian's torch links the reference BLAS, so bmm runs at ~3–5 GFLOP/s here)."""
    b, n, h, w = s.shape
    ps, st, tau, eps_ot = int(o["patch"]), int(o["stride"]), o["tau"], o["epsOt"]
    # [B·N, P, s²], patches in raster order of the grid; overlapping patches add up in the backward.
    # (Tensor.unfold, a strided view, is 4× faster here than nn.functional.unfold's im2col.)
    q = s.reshape(b * n, h, w).unfold(1, ps, st).unfold(2, ps, st).reshape(b * n, -1, ps * ps)
    k = g.reshape(b * n, h, w).unfold(1, ps, st).unfold(2, ps, st).reshape(b * n, -1, ps * ps)
    p = q.shape[1]
    if p > o["pmax"]:
        keep = (torch.arange(int(o["pmax"]), device=s.device) * p) // int(o["pmax"])  # floor(m·P / P_max)
        q, k, p = q[:, keep], k[:, keep], int(o["pmax"])
    q = q / (torch.linalg.norm(q, dim=2, keepdim=True) + 1e-7)
    k = k / (torch.linalg.norm(k, dim=2, keepdim=True) + 1e-7)
    if gemm == "bmm":
        sim = torch.bmm(q, k.transpose(1, 2))  # sim_ij = <q_i, g_j>, [B·N, P, P]
    else:
        # The same product as a grouped 1-D convolution (one group per (b, k)), which oneDNN runs:
        # out[(b,k), j, i] = Σ_d g[(b,k), j, d] · q[(b,k), i, d].
        x = q.transpose(1, 2).reshape(1, b * n * ps * ps, p)
        sim = nn.functional.conv1d(x, k.reshape(b * n * p, ps * ps, 1), groups=b * n).view(b * n, p, p).transpose(1, 2)
    eye = torch.eye(p, dtype=torch.bool, device=s.device)

    # Sinkhorn plan, cost "hard"; unrolled, so autograd differentiates through every iteration.
    grad_ot = bool(o["sinkhornGrad"]) and torch.is_grad_enabled()
    with torch.set_grad_enabled(grad_ot):
        kern = torch.exp((sim if grad_ot else sim.detach()) / eps_ot).masked_fill(eye, math.exp(-10 / eps_ot))
        u = torch.ones(b * n, p, 1, dtype=s.dtype, device=s.device)
        v = torch.ones(b * n, p, 1, dtype=s.dtype, device=s.device)
        kern_t = kern.transpose(1, 2)
        for _ in range(int(o["iters"])):
            u = 1 / torch.bmm(kern, v)
            v = 1 / torch.bmm(kern_t, u)
        plan = u * kern * v.transpose(1, 2)

    f = plan * ((p - 1) * o["Q"]) + 1e-8
    neg = ((sim + tau * torch.log(f)) / tau).masked_fill(eye, -10 / tau)  # the P negative logits
    pos = torch.diagonal(sim, dim1=1, dim2=2) / tau
    # Cross-entropy with the positive as class 0, as log1p(Σ_j exp(neg_ij − pos_i)).
    nce = torch.log1p(torch.exp(neg - pos.unsqueeze(2)).sum(dim=2))  # [B·N, P]
    return nce.sum(dim=1).mean(), p


def mghf_c_loss(dfe, sr, gt, opts=None, features32=None, selected=None, details=None, gemm="bmm"):
    """MGHF-c total (SPEC §7) and its parts, unweighted. A Γ (or β) of 0 skips that term.

    features32: (G, S) in float32 to take the importance from (the float64 check); by default the
    features themselves. details: a dict that receives importance, selected and patches."""
    o = dict(C_DEFAULTS, **(opts or {}))
    with torch.no_grad():
        g = dfe(gt)
    s = dfe(sr)
    parts, total = {}, 0
    if o["gamma1"]:
        parts["n"] = torch.mean((s - g) ** 2)
        total = total + o["gamma1"] * parts["n"]
    if o["gamma2"]:
        fg, fs = features32 if features32 is not None else (g, s)
        imp, sel, w = select_maps(fg, fs, o, selected)
        parts.update(csc_parts(g, s, sel, w, o))
        total = total + o["gamma2"] * parts["csc"]
        if details is not None:
            details.update(importance=imp, selected=sel)
    if o["gamma3"]:
        parts["lip"], patches = lip_loss(g, s, o, gemm)
        total = total + o["gamma3"] * parts["lip"]
        if details is not None:
            details["patches"] = patches
    return total, parts


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
    if name in ("mghf-c", "mghf-c-onednn"):
        model = load_dfe(weights) if weights else DFE()
        gemm = "onednn" if name.endswith("onednn") else "bmm"
        return model.eval(), lambda dfe, sr, gt: mghf_c_loss(dfe, sr, gt, gemm=gemm)[0]
    if name == "vgg16":
        return VGG16Features().eval(), vgg16_loss
    raise ValueError(f"unknown peer {name}")


def describe(err):
    """'Type: first line of the message', at most 500 characters."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]


def compile_loss(loss_fn, info):
    """torch.compile(loss_fn), or loss_fn itself with info["compile_error"] saying why not."""
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        info["compile_error"] = f"torch {torch.__version__} has no torch.compile"
        return loss_fn
    try:
        return compile_fn(loss_fn)
    except Exception as err:  # noqa: BLE001 — any failure means: report it, run eager
        info["compile_error"] = describe(err)
        return loss_fn


def time_peer(name, args):
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, loss_fn = build_peer(name, args.weights)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)  # gradient w.r.t. the input only, as the library
    sr0, gt = make_inputs(args.batch, args.size[0], args.size[1])
    sr0, gt = sr0.to(device), gt.to(device)  # the same values on every device
    extra = {}

    def step(fn):
        sr = sr0.clone().requires_grad_()
        loss = fn(model, sr, gt)
        loss.backward()
        return sr.grad

    if args.compile:
        # The first call compiles (forward and backward); it is timed apart. A failure there, or in
        # torch.compile itself, is reported and the peer is timed eager.
        eager_fn = loss_fn
        loss_fn = compile_loss(eager_fn, extra)
        extra["compiled"] = False
        if loss_fn is not eager_fn:
            t0 = time.perf_counter()
            try:
                step(loss_fn)
                if cuda:
                    torch.cuda.synchronize(device)
                extra["compiled"] = True
            except Exception as err:  # noqa: BLE001
                extra["compile_error"] = describe(err)
                loss_fn = eager_fn
                try:
                    torch._dynamo.reset()
                except Exception:  # noqa: BLE001
                    pass
            extra["first_call_s"] = time.perf_counter() - t0
        if not extra["compiled"]:
            print(f"torch_peer: {name}: torch.compile failed ({extra.get('compile_error')}); timing eager instead",
                  file=sys.stderr, flush=True)

    for _ in range(args.warmup):
        step(loss_fn)
    runs = []
    if cuda:
        torch.cuda.synchronize(device)
        extra["memory_allocated_before_mib"] = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.repeat):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            step(loss_fn)
            end.record()
            end.synchronize()
            runs.append(start.elapsed_time(end) / 1e3)
        extra["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            step(loss_fn)
            runs.append(time.perf_counter() - t0)
    out = {
        "peer": name,
        "batch": args.batch,
        "height": args.size[0],
        "width": args.size[1],
        "threads": args.threads,
        "median_s": statistics.median(runs),
        "runs": runs,
    }
    if cuda or args.compile:
        out.update(device=str(device), torch=torch.__version__, warmup=args.warmup, repeat=args.repeat)
        if cuda:
            out.update(gpu=torch.cuda.get_device_name(device), tf32=bool(args.tf32),
                       cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
        out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------
# Fixture check (float64)


def rel(a, b):
    return abs(a - b) / abs(b) if b != 0 else abs(a - b)


def within(a, b):
    """SPEC §8 tolerance for a value: |a − b| ≤ 1e-4·|b| + 1e-7."""
    return abs(a - b) <= 1e-4 * abs(b) + 1e-7


def check(folder, gemm="bmm"):
    if np is None:
        raise RuntimeError("--check needs numpy (pip install numpy)")
    with open(os.path.join(folder, "case.json")) as f:
        case = json.load(f)
    opts = dict(case.get("options", {}))
    variant = opts.pop("variant", "c")
    dims = case["dims"]
    expected = case["expected"]

    def raw(name):
        return torch.from_numpy(np.fromfile(os.path.join(folder, name), dtype="<f4").reshape(dims).copy())

    sr32, gt32, grad_ref = raw("sr.f32"), raw("gt.f32"), raw("grad.f32").double()
    if opts.pop("inputRange", "unit") == "symmetric":
        to_unit = lambda x: (x + 1) / 2  # noqa: E731 — SPEC §1; the chain rule keeps the 1/2
    else:
        to_unit = lambda x: x  # noqa: E731
    dfe32 = load_dfe(os.path.join(folder, "weights.safetensors")).eval()
    dfe = load_dfe(os.path.join(folder, "weights.safetensors")).double().eval()
    sr = sr32.double().requires_grad_()
    gt = gt32.double()
    result = {"case": os.path.basename(os.path.normpath(folder)), "variant": variant}
    ok = True

    if variant == "n":
        loss = mghf_n_loss(dfe, to_unit(sr), to_unit(gt))
        parts = {}
    else:
        # Importance and selection from float32 features (as the library and the fixtures);
        # every value and the gradient from float64 features.
        with torch.no_grad():
            feats32 = (dfe32(to_unit(gt32)), dfe32(to_unit(sr32)))
        selected = opts.pop("selected", None)
        details = {}
        loss, parts = mghf_c_loss(dfe, to_unit(sr), to_unit(gt), opts, feats32, selected, details, gemm)
        if "importance" in details and expected.get("importance") is not None:
            imp_ref = torch.tensor(expected["importance"], dtype=torch.float64)
            result["importance_max_abs_err"] = (details["importance"] - imp_ref).abs().max().item()
            same = details["selected"].tolist() == expected["selected"]
            result["selected_match"] = same
            ok &= same
        if "patches" in details:
            result["patches"] = details["patches"]
            ok &= details["patches"] == expected.get("patchesUsed")
        if sorted(parts) != sorted(expected.get("parts", {})):
            result["parts_mismatch"] = {"ours": sorted(parts), "expected": sorted(expected.get("parts", {}))}
            ok = False
    loss.backward()

    exp_loss = expected["loss"]
    result["loss"] = loss.item()
    result["expected_loss"] = exp_loss
    result["loss_rel_err"] = rel(loss.item(), exp_loss)
    ok &= within(loss.item(), exp_loss)
    for name, value in parts.items():
        ref = expected["parts"].get(name)
        if ref is None:
            continue
        result[f"{name}_rel_err"] = rel(value.item(), ref)
        ok &= within(value.item(), ref)
    grad_rel = (torch.linalg.norm(sr.grad - grad_ref) / torch.linalg.norm(grad_ref)).item()
    result["grad_rel_err"] = grad_rel
    result["grad_norm_rel_err"] = rel(torch.linalg.norm(sr.grad).item(), expected["gradNorm"])
    ok &= grad_rel <= 1e-3  # SPEC §8 (the float32 rounding of grad.f32 is far below this)
    result["ok"] = bool(ok)
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", nargs="+", choices=("mghf-n", "mghf-c", "mghf-c-onednn", "vgg16", "all"), default=["all"],
                    help="one or more peers; all = mghf-n vgg16 (mghf-c is ~5× slower and named explicitly)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=None, help="timed runs (default 5 on cpu, 20 on cuda)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1 on cpu, 3 on cuda)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the peers run (cuda: float32 on GPU 0, timed with CUDA events, "
                         "max_memory_allocated reported); --check always runs on the CPU")
    ap.add_argument("--compile", action="store_true",
                    help="wrap the loss function in torch.compile (a failure is reported, then the peer runs eager)")
    ap.add_argument("--tf32", action="store_true",
                    help="cuda: let cuDNN and matmuls use TF32 (default off: strict float32, as the library)")
    ap.add_argument("--weights", help="DFE weights (SPEC §9 safetensors) for the mghf-n and mghf-c peers")
    ap.add_argument("--json", action="store_true", help="one JSON line per peer")
    ap.add_argument("--check", metavar="DIR", nargs="+", help="compare MGHF-n/-c (float64) with fixture folders")
    ap.add_argument("--gemm", choices=("bmm", "onednn"), default="bmm", help="LIP similarity GEMM used by --check")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if args.repeat is None:
        args.repeat = 20 if cuda else 5
    if args.warmup is None:
        args.warmup = 3 if cuda else 1

    torch.set_num_threads(args.threads)
    if args.check:
        return max(check(folder, args.gemm) for folder in args.check)
    if cuda:
        if not torch.cuda.is_available():
            print(f"torch_peer: --device cuda, but torch.cuda.is_available() is False "
                  f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})", file=sys.stderr)
            return 1
        torch.backends.cudnn.benchmark = True  # the fastest conv algorithms for these fixed shapes
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)

    peers = []
    for name in args.peer:
        for p in ("mghf-n", "vgg16") if name == "all" else (name,):
            if p not in peers:
                peers.append(p)
    for name in peers:
        r = time_peer(name, args)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            line = (f"{name:7s} B={r['batch']} {r['height']}x{r['width']} threads={r['threads']}: "
                    f"median {r['median_s'] * 1e3:.1f} ms over {len(r['runs'])} runs")
            if "device" in r:
                line += f", {r['device']}"
                if "max_memory_allocated_mib" in r:
                    line += f", max_memory_allocated {r['max_memory_allocated_mib']:.0f} MiB"
                if args.compile:
                    line += (f", torch.compile (first call {r['first_call_s']:.1f} s)" if r.get("compiled")
                             else f", eager (compile failed: {r.get('compile_error')})")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
