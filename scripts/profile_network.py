"""Where one CTSTFM forward spends its time: torch.profiler, per block and per operator.

Runs the default model (``resources/default_model.pt``) on one 6 x 256 x 256 tile of the bundled
sample, fp32 eager (the reference path), after one warm-up. Every block of the paper is wrapped in
a ``record_function`` named after it (inclusive times: a BRB inside an MKSB is counted in both
"MKSB" and "BRB (all)"), so the table says which blocks to speed up; the operator table says what
they are made of. ``--threads`` sets torch's intra-op threads.

    .venv/bin/python scripts/profile_network.py [--threads 1 2] [--path eager exact] [--size 256] [--top 12]
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from benchutil import machine  # noqa: E402

# Blocks timed separately; "BRB (all)" sums every BRB wherever it sits.
BLOCKS = ("MKCE stem", "BRB (all)", "MKCB", "MKSB", "CETB", "CFTB", "CCD")


def _label(name, module):
    kind = type(module).__name__.removeprefix("Folded")  # the exact path's blocks count as theirs
    if kind == "BRB":
        return "BRB (all)"
    if kind in ("MKCB", "MKSB", "CETB", "CFTB", "CCD"):
        return kind
    if name.endswith("encoder.stem"):
        return "MKCE stem"
    return None


def _wrap_blocks(model):
    """Forward hooks that open/close a ``record_function`` around every block; returns the handles."""
    import torch

    handles = []
    for name, module in model.named_modules():
        label = _label(name, module)
        if label is None:
            continue
        stack = []

        def pre(_module, _inputs, label=label, stack=stack):
            ctx = torch.profiler.record_function(label)
            ctx.__enter__()
            stack.append(ctx)

        def post(_module, _inputs, _output, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def sample_tile(size):
    """A ``(coarse, fine)`` pair of ``1 x 6 x size x size`` reflectance tensors from the bundled sample."""
    from model_core.inference import sample_tiles

    coarse, fine, _truth = sample_tiles(size, count=1)
    return coarse, fine


def profile(threads=1, size=256, top=12, path="eager"):
    """``(block_rows, op_rows, total_ms)``: per-block and top-operator CPU times of one forward
    through the inference ``path`` (eager or exact: the paths whose blocks are modules)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from model_core.inference import prepare
    from model_core.model_file import load_model
    from model_core.paths import DEFAULT_MODEL

    torch.set_num_threads(threads)
    prepared = prepare(load_model(DEFAULT_MODEL, map_location="cpu").model.eval(), path)
    coarse, fine = sample_tile(size)
    handles = _wrap_blocks(prepared.forward)
    try:
        with torch.inference_mode():
            prepared(coarse, fine)  # warm-up (oneDNN primitive creation)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                with torch.profiler.record_function("forward"):
                    prepared(coarse, fine)
    finally:
        for handle in handles:
            handle.remove()
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    total_ms = by_name["forward"].cpu_time_total / 1e3
    blocks = [(b, by_name[b].cpu_time_total / 1e3, by_name[b].count) for b in BLOCKS if b in by_name]
    ops = defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
            ops[e.key][0] += e.self_cpu_time_total / 1e3
            ops[e.key][1] += e.count
    op_rows = sorted(((k, v[0], v[1]) for k, v in ops.items()), key=lambda r: -r[1])[:top]
    return blocks, op_rows, total_ms


def print_profile(threads, path, blocks, op_rows, total_ms):
    print(f"\n{path} forward, {threads} thread(s): {total_ms:.0f} ms")
    print(f"{'block (inclusive)':<22} {'ms':>8} {'share':>6} {'calls':>6}")
    for name, ms, count in blocks:
        print(f"{name:<22} {ms:8.0f} {ms / total_ms:6.1%} {count:6d}")
    print(f"{'operator (self time)':<34} {'ms':>8} {'share':>6} {'calls':>6}")
    for name, ms, count in op_rows:
        print(f"{name:<34} {ms:8.0f} {ms / total_ms:6.1%} {count:6d}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--path", nargs="+", default=["eager"], choices=["eager", "exact"])
    args = parser.parse_args([] if argv is None else argv)
    from benchutil import load_average

    print(f"machine: {machine()}; load average {load_average()}")
    for path in args.path:
        for threads in args.threads:
            print_profile(threads, path, *profile(threads, args.size, args.top, path))


if __name__ == "__main__":
    main(sys.argv[1:])
