"""Where a profiled span's wall time went, from its kernels' start and end times (µs)."""


def timeline(events, span: str) -> dict:
    """Host time before the first kernel, GPU busy time, idle gaps between kernels (the five
    largest listed), host time after the last kernel, for the CPU record_function ``span``."""
    wall = next(e for e in events if e.name == span and e.device_type.name == "CPU")
    a, b = wall.time_range.start, wall.time_range.end
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events  # not the GPU-side
                     if e.device_type.name == "CUDA" and e.name != span  # annotation span
                     and a <= e.time_range.start <= b)
    if not kernels:
        return {"wall_us": round(b - a), "kernels": 0}
    busy, gaps, end = 0.0, [], kernels[0][0]
    for s0, e0 in kernels:
        if s0 > end:
            gaps.append(s0 - end)
        busy += max(0.0, e0 - max(s0, end))
        end = max(end, e0)
    return {"wall_us": round(b - a), "before_first_kernel_us": round(kernels[0][0] - a),
            "gpu_busy_us": round(busy), "gpu_idle_between_us": round(sum(gaps)),
            "largest_gaps_us": [round(g) for g in sorted(gaps)[-5:][::-1]],
            "after_last_kernel_us": round(b - end), "kernels": len(kernels)}
