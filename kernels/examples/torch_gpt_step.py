"""
PyTorch eager forward+backward of the standard-config GPT, without the optimizer: the peer of
kernels/examples/gpt_step.rs. It imports the model from the PyTorch reference
(shared/bench/reference_gpt.py), so it is the exact model the Rust train program races.

    python3 kernels/examples/torch_gpt_step.py PATH/TO/reference_gpt.py [STEPS]
"""

import importlib.util, statistics, sys, time

import torch

spec = importlib.util.spec_from_file_location("reference_gpt", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10

torch.set_num_threads(2)
torch.manual_seed(42)
model = ref.GPT(ref.GPTConfig())
model.init_weights()
# As in gpt_step.rs: non-zero output projections, so every gradient path carries real numbers.
with torch.no_grad():
    for block in model.transformer.h:
        block.attn.c_proj.weight.normal_(0, 256 ** -0.5)
        block.mlp.c_proj.weight.normal_(0, 0.5 * 1024 ** -0.5)
idx = torch.randint(0, 4096, (16, 257))
x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def step():
    model.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    return loss.item()


step()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(f"torch {torch.__version__} gpt fwd+bwd: median {statistics.median(times):.1f} ms over {steps} steps (min {times[0]:.1f})")
