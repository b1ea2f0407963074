// Does not compile: tests/test_emulator.py checks the error names this file.
extern "C" __global__ void broken(float* y) { y[0] = undefined_symbol; }
