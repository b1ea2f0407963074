"""NumPy twins of the CUDA primitives, one module per op family (see ``gpucnn.backend``)."""
