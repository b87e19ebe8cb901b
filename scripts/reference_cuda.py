"""
Runs the PyTorch peer (shared/bench/reference_gpt.py, a CPU benchmark) on a CUDA GPU, unchanged:
the same model, optimizer, schedules, synthetic data and JSON line, with these differences only:

  - every tensor is created on the GPU (torch.set_default_device), the synthetic batches are made
    on the CPU with the peer's own generator (so the data are identical) and then moved;
  - `--autocast bf16` autocasts on "cuda" instead of "cpu" (bf16 matmuls, f32 master weights, as
    the original train.py does on an H100);
  - the JSON line gains the GPU fields: gpu, gpu_peak_mem_mb (torch.cuda.max_memory_allocated),
    gpu_peak_reserved_mb (max_memory_reserved) and tf32 (whether f32 matmuls may use TF32: off,
    as torch's default, so an f32 run is compared with an f32 run).

Usage: python3 scripts/reference_cuda.py PATH/TO/reference_gpt.py [the peer's flags...]
Written for scripts/gpu-check.sh; it needs torch with CUDA (the default PyPI wheel).
PEER_DEVICE=cpu runs the same wrapper on the CPU (GPU fields null): how the wrapper itself is
tested on a machine without a GPU.
"""

import importlib.util
import json
import os
import sys

import torch


def main():
    if len(sys.argv) < 2 or not sys.argv[1].endswith(".py"):
        sys.exit("usage: reference_cuda.py PATH/TO/reference_gpt.py [flags...]")
    device = os.environ.get("PEER_DEVICE", "cuda")
    on_gpu = device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("reference_cuda.py: torch sees no CUDA device (torch " + torch.__version__ + ")")
    path, sys.argv = sys.argv[1], [sys.argv[1]] + sys.argv[2:]
    spec = importlib.util.spec_from_file_location("reference_gpt", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)

    make_batches = peer.make_synthetic_batches

    def batches_on_gpu(*args, **kwargs):
        # The peer's CPU generator decides the data; only then do they move.
        with torch.device("cpu"):
            xs, ys = make_batches(*args, **kwargs)
        return xs.to(device), ys.to(device)

    real_autocast = torch.autocast

    def autocast(device_type, *args, **kwargs):
        return real_autocast(device if device_type == "cpu" else device_type, *args, **kwargs)

    class JsonWithGpu:
        # The peer prints its record with json.dumps; add the GPU's numbers to it.
        def dumps(self, record, *args, **kwargs):
            if isinstance(record, dict) and record.get("framework") == "pytorch":
                record["device"] = device
                record["gpu"] = torch.cuda.get_device_name(0) if on_gpu else None
                if on_gpu:
                    torch.cuda.synchronize()
                mb = lambda b: round(b / 2**20, 1) if on_gpu else None
                record["gpu_peak_mem_mb"] = mb(torch.cuda.max_memory_allocated() if on_gpu else 0)
                record["gpu_peak_reserved_mb"] = mb(torch.cuda.max_memory_reserved() if on_gpu else 0)
                record["tf32"] = torch.backends.cuda.matmul.allow_tf32
            return json.dumps(record, *args, **kwargs)

    class TorchSeenByThePeer:
        # torch itself, except for autocast (patched for the peer's module only, not globally).
        def __getattr__(self, name):
            return autocast if name == "autocast" else getattr(torch, name)

    peer.make_synthetic_batches = batches_on_gpu
    peer.torch = TorchSeenByThePeer()
    peer.json = JsonWithGpu()
    torch.set_default_device(device)
    peer.main()


if __name__ == "__main__":
    main()
