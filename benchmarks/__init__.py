"""Side-by-side benchmarks of gpucnn against PyTorch on the same device, in the same run.

Run ``python -m benchmarks.run --device cpu --out benchmarks/results/cpu.json`` (see
``benchmarks/README.md``). Nothing here is imported by the library or its timed tests.
"""
