"""CuPy launchers of the ``cuda/*.cu`` kernels, one module per op family.

Each launcher takes ``xp`` and kernels from :func:`gpucnn.backend.runtime.current_runtime`,
so tests can run the same launcher through the host emulator on NumPy arrays.
"""
