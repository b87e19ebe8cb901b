"""
PyTorch eager timings of the ops in kernels/examples/bench.rs, same shapes, same harness
(op -> .sum() -> .backward(), fresh leaves per run, median of RUNS), 2 threads, fp32 CPU: what
our fused kernels are up against in the PyTorch peer (shared/bench/reference_gpt.py).

    python3 kernels/examples/torch_ops.py [RUNS]
"""

import statistics, sys, time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 25


def timed(make, fn):
    for _ in range(2):  # warm up
        fn(*make())
    samples = []
    for _ in range(RUNS):
        args = make()
        t0 = time.perf_counter()
        fn(*args)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def leaf(*shape, std=1.0):
    return (torch.randn(*shape) * std).requires_grad_()


def rms(x):
    F.rms_norm(x, (x.size(-1),)).sum().backward()


def window_mask(t, w):
    pos = torch.arange(t)
    dist = pos[:, None] - pos[None, :]
    return (dist >= 0) & (dist <= w)


def attn(q, k, v, mask):
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    y.transpose(1, 2).sum().backward()


def ce(x, targets):
    z = 15 * torch.tanh(x / 15)
    F.cross_entropy(z, targets, ignore_index=-1).backward()


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {RUNS} runs, fwd+bwd in ms")
print(f"{'rms_norm [16,256,256]':<34} {timed(lambda: (leaf(16, 256, 256),), rms):>9.2f}")
print(f"{'rms_norm [16,256,4,64] (q/k norm)':<34} {timed(lambda: (leaf(16, 256, 4, 64),), rms):>9.2f}")
for w in (128, 256):
    mask = window_mask(256, w)
    t = timed(lambda: (leaf(16, 256, 4, 64), leaf(16, 256, 4, 64), leaf(16, 256, 4, 64), mask), attn)
    print(f"{f'attention [16,256,4,64] w={w}':<34} {t:>9.2f}")
targets = torch.randint(0, 4096, (4096,))
print(f"{'softcap_cross_entropy [4096,4096]':<34} {timed(lambda: (leaf(4096, 4096, std=3.0), targets), ce):>9.2f}")
