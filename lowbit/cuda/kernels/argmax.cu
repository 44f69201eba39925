// Greedy decoding on the device: argmax of one token's logits (the first index of the largest
// value, as numpy's argmax), written as the next step's input (io[1] = token, io[0] = pos + 1)
// and into host-mapped memory (out[pos], 0 = none), so the host can queue the next decode step
// before it has read this one's token. Each block reduces its slice to a 64-bit key (ordered
// float bits, then the inverted index) and atomicMax'es it into state[0]; the last block to
// finish (counter state[1]) publishes the result and resets the state for the next launch.
constexpr int ARGMAX_BLOCKS = 32, ARGMAX_THREADS = 256;
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
    uint32_t u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (0xFFFFFFFFu - (uint32_t)i);
}
// after this block's atomicMax into state[0]: the last of nblocks blocks (counter state[1]) takes
// the result, writes the token and resets the state for the next launch
__device__ __forceinline__ void argmax_publish(unsigned long long* state, int32_t* io, int32_t* out, unsigned int nblocks) {
    __threadfence();
    if (atomicAdd(reinterpret_cast<unsigned int*>(state + 1), 1u) == nblocks - 1) {
        __threadfence();
        const unsigned long long k = atomicExch(state, 0ull);
        const int tok = (int)(0xFFFFFFFFu - (uint32_t)(k & 0xFFFFFFFFu));
        const int pos = io[0];
        if (out) out[pos] = tok;
        io[1] = tok;
        io[0] = pos + 1;
        state[1] = 0;
    }
}
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float* __restrict__ logits, int n, unsigned long long* state,
                                                                int32_t* io, int32_t* out) {
    __shared__ unsigned long long red[ARGMAX_THREADS / 32];
    pdl_launch();
    pdl_wait();
    unsigned long long best = 0;
    for (int i = blockIdx.x * ARGMAX_THREADS + threadIdx.x; i < n; i += ARGMAX_BLOCKS * ARGMAX_THREADS) {
        const unsigned long long k = argmax_key(logits[i], i);
        best = k > best ? k : best;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) { unsigned long long t = __shfl_xor_sync(0xffffffffu, best, o); best = t > best ? t : best; }
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; w++) best = red[w] > best ? red[w] : best;
        atomicMax(state, best);
        argmax_publish(state, io, out, ARGMAX_BLOCKS);
    }
}
