// The card's own copy bandwidth for tools/bench/bench_cuda.py (its "% of D2D" column): a benchmark, so
// it lives beside the tool, not in the shipped library. Built with lowbit.cuda.build like the
// kernels (same nvcc flags) into a small library of its own.
#include <cuda_runtime.h>
#include <stdio.h>

#define LB_API extern "C" __attribute__((visibility("default")))

static char g_err[512];
LB_API const char* lb_bench_last_error(void) { return g_err; }
static int fail(const char* what, cudaError_t e) {
    snprintf(g_err, sizeof g_err, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return (int)e ? (int)e : -1;
}
#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return fail(#call, e_); } while (0)

// median-free mean over `iters` cudaMemcpy D2D of `bytes` bytes (after a warm-up)
LB_API int lb_bench_d2d(size_t bytes, int iters, float* ms_per_copy) {
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));   // as the runtime's own stream
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    cudaError_t r = cudaMalloc(&b, bytes);
    if (r != cudaSuccess) { cudaFree(a); return fail("cudaMalloc", r); }
    cudaMemsetAsync(a, 1, bytes, s);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++) cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e0, s);
    for (int i = 0; i < iters; i++) cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e1, s);
    r = cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    cudaFree(a); cudaFree(b);
    cudaStreamDestroy(s);
    if (r != cudaSuccess) return fail("bench_d2d", r);
    *ms_per_copy = ms / iters;
    return 0;
}
