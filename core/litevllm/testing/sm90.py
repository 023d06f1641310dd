"""Compile a Triton kernel for sm_90 ahead of time, without a GPU, for plugins' compile tests.

Scripts import this inside ``try``/``except ImportError`` and exit 3 when it fails: that
Triton cannot compile ahead of time."""
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def compile_sm90(fn, constexprs: dict, types: dict, aligned, **options):
    """Compile ``fn`` for sm_90: ``types`` maps argument names to Triton types (others are
    i32), ``aligned`` names the arguments specialized as multiples of 16. Exits 3 without
    ptxas."""
    sig = {a: "constexpr" if a in constexprs else types.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in aligned}
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    except RuntimeError as e:
        if "ptxas" in str(e).lower():
            print(f"no ptxas here: {str(e).splitlines()[0]}")
            sys.exit(3)
        raise
