"""Compile the fp8 GEMV for sm_90 ahead of time (no GPU needed) and count the barriers
(``bar.sync``/``barrier.sync``) inside its K loop in the PTX. Prints one JSON line per variant;
exit 3 when this Triton cannot compile ahead of time."""
import json
import re
import sys

try:
    from litevllm.testing import sm90
except ImportError as e:
    print(f"this Triton cannot compile ahead of time ({e})")
    sys.exit(3)

from litevllm_fp8.kernels.w8a16_gemv import _split_sum_kernel, _w8_gemv_kernel

TYPES = dict(x_ptr="*bf16", w_ptr="*fp8e4nv", s_ptr="*fp32", bias_ptr="*bf16", out_ptr="*bf16",
             part_ptr="*fp32")
# what Triton's launcher specializes at Llama shapes: 16-byte aligned pointers, ints % 16 == 0
DIV16 = {"N", "K", "GROUP_K", "K_SPLIT", "stride_xm", "stride_wn", "stride_om", "MN"}
BARRIER = re.compile(r"\b(bar\.sync|barrier\.sync|bar\.arrive|barrier\.cta)")


def compile_sm90(fn, constexprs, types=TYPES, **options):
    aligned = {a for a in fn.arg_names if a not in constexprs
               and (a in DIV16 or types.get(a, "i32").startswith("*"))}
    return sm90.compile_sm90(fn, constexprs, types, aligned, **options)


def loop_barriers(ptx: str) -> tuple[int, int]:
    """(barriers inside loops, barriers in all): a loop is a label that a later branch jumps
    back to; everything between the label and that branch is its body."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines)
              if (m := re.match(r"^\$?(\w+):", line.strip()))}
    in_loop = set()
    for i, l in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+\$?(\w+);", l)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            in_loop.update(range(labels[m.group(1)], i + 1))
    hits = [i for i, l in enumerate(lines) if BARRIER.search(l)]
    return sum(i in in_loop for i in hits), len(hits)


def main():
    base = dict(BLOCKWISE=False, HAS_BIAS=True, NATIVE=True, W_SCALE=1.0, EVEN_K=True,
                UNROLL=1)
    variants = [dict(ROWS=1, EACH=False, SPLIT_K=4, BLOCK_N=8, BLOCK_K=512, VEC=16, UNROLL=2,
                     num_warps=8),  # the defaults for M = 1 and M = 4
                dict(ROWS=4, EACH=True, SPLIT_K=4, BLOCK_N=8, BLOCK_K=512, VEC=16, UNROLL=2,
                     num_warps=8),
                dict(ROWS=1, EACH=False, SPLIT_K=4, BLOCK_N=8, BLOCK_K=512, VEC=16, UNROLL=2),
                dict(ROWS=4, EACH=False, SPLIT_K=2, BLOCK_N=16, BLOCK_K=256, VEC=8),
                dict(ROWS=2, EACH=True, SPLIT_K=2, BLOCK_N=16, BLOCK_K=128, VEC=8,
                     BLOCKWISE=True),
                dict(ROWS=1, EACH=False, SPLIT_K=1, BLOCK_N=32, BLOCK_K=512, VEC=16,
                     EVEN_K=False, NATIVE=False, W_SCALE=256.0)]
    for v in variants:
        c = dict(base, **v)
        warps = c.pop("num_warps", 4)
        types = dict(TYPES, w_ptr="*fp8e4nv" if c["NATIVE"] else "*u8")
        k = compile_sm90(_w8_gemv_kernel, c, types, num_warps=warps)
        in_loop, total = loop_barriers(k.asm["ptx"])
        vec16 = len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", k.asm["ptx"]))
        print(json.dumps({**v, "loop_barriers": in_loop, "barriers": total,
                          "v4_loads": vec16}), flush=True)
    compile_sm90(_split_sum_kernel, dict(SPLIT_K=4, HAS_BIAS=True, BLOCK=1024))
    print("compiled")


if __name__ == "__main__":
    main()
