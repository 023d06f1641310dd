"""Compile the packed-weight kernels for sm_90 ahead of time (no GPU needed):
``python compile_sm90.py w4-zero|w4-perm|w8|reduce``; exit 3 when this Triton cannot."""
import sys

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as e:
    print(f"this Triton cannot compile ahead of time ({e})")
    sys.exit(3)

from litevllm_gptq.kernels.dequant import _dequant_kernel
from litevllm_gptq.kernels.gemm import _gemm_kernel
from litevllm_gptq.kernels.gemv import _gemv_kernel
from litevllm_gptq.kernels.reduce import _splitk_reduce_kernel

TYPES = dict(x_ptr="*bf16", qw_ptr="*i32", s_ptr="*fp16", zb_ptr="*fp16", perm_ptr="*i64",
             bias_ptr="*bf16", out_ptr="*bf16", eid_ptr="*i32", part_ptr="*fp32")
FORMATS = {"w4-zero": dict(BITS=4, HAS_ZB=True, HAS_PERM=False),
           "w4-perm": dict(BITS=4, HAS_ZB=False, HAS_PERM=True),
           "w8": dict(BITS=8, HAS_ZB=False, HAS_PERM=False)}


def compile_sm90(fn, constexprs, **options):
    sig = {a: "constexpr" if a in constexprs else TYPES.get(a, "i32") for a in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    except RuntimeError as e:
        if "ptxas" in str(e).lower():
            print(f"no ptxas here: {str(e).splitlines()[0]}")
            sys.exit(3)
        raise


def main(what):
    if what == "reduce":
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
