"""Speed measurements: lowbit alone, against llama.cpp, per kernel, on the CPU and the GPU."""
