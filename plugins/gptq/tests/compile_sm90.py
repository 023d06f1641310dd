"""Compile the packed-weight kernels for sm_90 ahead of time (no GPU needed):
``python compile_sm90.py w4-zero|w4-perm|w8|reduce|wide-loop``; exit 3 when this Triton cannot.
``wide-loop`` prints the barriers, 16-byte loads and FMAs inside the wide GEMV's K loop."""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import triton
    from litevllm.testing import sm90
except ImportError as e:
    print(f"this Triton cannot compile ahead of time ({e})")
    sys.exit(3)

from litevllm_gptq.kernels.dequant import _dequant_kernel
from litevllm_gptq.kernels.gemm import _gemm_kernel
from litevllm_gptq.kernels.gemv import _gemv_kernel
from litevllm_gptq.kernels.gemv_wide import MAX_R_PERM, SWEEP_TILES, _gemv_wide_kernel
from litevllm_gptq.kernels.reduce import _splitk_reduce_kernel

TYPES = dict(x_ptr="*bf16", qw_ptr="*i32", s_ptr="*fp16", zb_ptr="*fp16", perm_ptr="*i64",
             bias_ptr="*bf16", out_ptr="*bf16", eid_ptr="*i32", part_ptr="*fp32")
FORMATS = {"w4-zero": dict(BITS=4, HAS_ZB=True, HAS_PERM=False),
           "w4-perm": dict(BITS=4, HAS_ZB=False, HAS_PERM=True),
           "w8": dict(BITS=8, HAS_ZB=False, HAS_PERM=False)}


# arguments Triton specializes as multiples of 16 at launch for the real (aligned) shapes
ALIGNED = ("x_ptr", "qw_ptr", "s_ptr", "zb_ptr", "out_ptr", "N", "stride_xm", "stride_om",
           "stride_os", "ROWS_PER_SPLIT")


def compile_sm90(fn, constexprs, **options):
    return sm90.compile_sm90(fn, constexprs, TYPES, ALIGNED, **options)


def loop_stats(fn, constexprs, **options) -> dict:
    """Counts inside the innermost loop of the PTX (the body between a loop header label and
    its backward branch)."""
    kernel = compile_sm90(fn, constexprs, **options)
    lines = kernel.asm["ptx"].splitlines()
    heads = {ln.split(":")[0]: i for i, ln in enumerate(lines) if "Loop Header" in ln}
    for i, ln in enumerate(lines):
        hit = re.search(r"bra(?:\.uni)?\s+(\$L__BB\d+_\d+);", ln)
        if hit and heads.get(hit.group(1), i) < i:
            body = "\n".join(lines[heads[hit.group(1)]:i + 1])
            return {"bar": len(re.findall(r"\bbar\.", body)) + body.count("barrier"),
                    "ld_v4": body.count("ld.global.v4"), "fma": body.count("fma.rn.f32"),
                    "lines": len(body.splitlines()), "spills": spills(kernel.asm.get("cubin"))}
    raise RuntimeError("no loop found in the PTX")


def spills(cubin) -> int | None:
    """Local-memory loads and stores in the SASS (register spills); None without nvdisasm."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    if not cubin or not tool.is_file():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([str(tool), "-c", f.name], capture_output=True, text=True).stdout
    return len(re.findall(r"\b(?:LDL|STL)\b", sass))


WIDE_LOOPS = [(fmt, dict(R=min(r, MAX_R_PERM) if FORMATS[fmt]["HAS_PERM"] else r,
                         BN=32 * vec * nw), nw) for fmt in FORMATS for r, vec, nw in SWEEP_TILES]


def main(what):
    if what == "wide-loop":
        for fmt, tile, nw in WIDE_LOOPS:
            stats = loop_stats(_gemv_wide_kernel, dict(FORMATS[fmt], HAS_BIAS=True,
                                                       HAS_EXPERT=False, **tile), num_warps=nw)
            print(json.dumps(dict(fmt=fmt, num_warps=nw, **tile, **stats)))
        compile_sm90(_gemv_wide_kernel, dict(FORMATS["w4-zero"], HAS_BIAS=True, HAS_EXPERT=True,
                                             R=16, BN=128), num_warps=1)
    elif what == "reduce":
        compile_sm90(_splitk_reduce_kernel, dict(SPLIT=4, HAS_BIAS=True, BLOCK=1024))
    else:
        fmt = FORMATS[what]
        for pe, expert in ((False, False), (True, True)):
            compile_sm90(_gemv_kernel, dict(fmt, HAS_BIAS=True, NG=2, RG=8, BN=128,
                                            PER_ELEMENT=pe, HAS_EXPERT=expert), num_warps=4)
        compile_sm90(_gemm_kernel, dict(fmt, HAS_BIAS=True, BM=16, BN=64,
                                        BKP=128 * fmt["BITS"] // 32), num_warps=4, num_stages=3)
        compile_sm90(_dequant_kernel, dict(BITS=fmt["BITS"], HAS_ZB=fmt["HAS_ZB"], BKP=16, BN=128))
    print(what, "compiled")


if __name__ == "__main__":
    main(sys.argv[1])
