// The C API (extern "C", loaded from Python with cffi in ABI mode: lowbit/cuda/loader.py declares
// it): init and kill switches, memory, load-time repacks, the GEMV dispatch across families, norms,
// attention, argmax, CUDA graphs and events.

LB_API const char* lb_last_error(void) { return g_err; }

LB_API int lb_init(int device, char* name, int name_len, int* cc, long long* total_mem, int* sms) {
    int n = 0;
    CK(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n) { snprintf(g_err, sizeof g_err, "CUDA device %d does not exist (%d found)", device, n); return -1; }
    CK(cudaSetDevice(device));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, device));
    snprintf(name, name_len, "%s", p.name);
    *cc = p.major * 10 + p.minor;
    *total_mem = (long long)p.totalGlobalMem;
    *sms = p.multiProcessorCount;
    g_sms = p.multiProcessorCount;
    if (!g_stream) CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    const char* e = getenv("LOWBIT_CUDA_PDL");
    g_pdl = *cc >= 90 && !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_DP4A");
    g_dp4a = !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_MMA");
    g_mma = !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_MMA_MIN");
    if (e && atoi(e) >= 2) g_mma_min = atoi(e);
    return 0;
}

LB_API int lb_malloc(uint64_t* ptr, size_t bytes) {
    void* p = nullptr;
    CK(cudaMalloc(&p, bytes ? bytes : 16));
    *ptr = (uint64_t)p;
    return 0;
}
LB_API int lb_free(uint64_t ptr) { CK(cudaFree((void*)ptr)); return 0; }
LB_API int lb_mem_info(size_t* free_b, size_t* total_b) { CK(cudaMemGetInfo(free_b, total_b)); return 0; }
LB_API int lb_memset(uint64_t ptr, int v, size_t n) { CK(cudaMemsetAsync((void*)ptr, v, n, g_stream)); return 0; }
LB_API int lb_htod(uint64_t dst, const void* src, size_t n) {
    CK(cudaMemcpyAsync((void*)dst, src, n, cudaMemcpyHostToDevice, g_stream));
    CK(cudaStreamSynchronize(g_stream));
    return 0;
}
LB_API int lb_htod_async(uint64_t dst, const void* src, size_t n) {   // src must be pinned (lb_host_alloc)
    CK(cudaMemcpyAsync((void*)dst, src, n, cudaMemcpyHostToDevice, g_stream));
    return 0;
}
LB_API int lb_dtoh(void* dst, uint64_t src, size_t n) {
    CK(cudaMemcpyAsync(dst, (const void*)src, n, cudaMemcpyDeviceToHost, g_stream));
    CK(cudaStreamSynchronize(g_stream));
    return 0;
}
LB_API int lb_host_alloc(uint64_t* ptr, size_t n) { void* p; CK(cudaMallocHost(&p, n)); *ptr = (uint64_t)p; return 0; }
LB_API int lb_host_free(uint64_t ptr) { CK(cudaFreeHost((void*)ptr)); return 0; }
LB_API int lb_sync(void) { CK(cudaStreamSynchronize(g_stream)); return 0; }

LB_API int lb_repack(uint64_t src, uint64_t body, uint64_t tail, size_t nblocks, int block_bytes, int body_off, int body_len) {
    repack_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint8_t*)tail, nblocks, block_bytes, body_off, body_len);
    CKL("repack_kernel");
    return 0;
}
LB_API int lb_repack_vq(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols, int type) {
    const int D = VQ_D(type), B = VQ_B(type);
    if (!is_vq(type) || cols % B) { snprintf(g_err, sizeof g_err, "codebook rows of %d weights (type %d) are not whole blocks", cols, type); return -1; }
    repack_vq_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint8_t*)tail, rows, cols / D, B / D);
    CKL("repack_vq_kernel");
    return 0;
}
LB_API int lb_repack_q8(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols) {
    if (cols % 32) { snprintf(g_err, sizeof g_err, "q8_0 rows of %d weights are not whole blocks", cols); return -1; }
    repack_q8_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint16_t*)tail, rows, cols);
    CKL("repack_q8_kernel");
    return 0;
}

// y = W x for ntok tokens (x rows ldx floats apart), in chunks of at most 8 tokens per pass
LB_API int lb_gemv(const lb_job* job_in, uint64_t x, int ldx, int ntok) {
    lb_job others;   // codebook matrices first (their own kernel), then the rest as before
    const bool mma = g_mma && ntok >= g_mma_min;   // long prompt passes: tensor-core GEMM (gemm_mma_kernel)
    {
        int rc = gemv_vq(*job_in, x, ldx, ntok, &others, mma);
        if (rc) return rc;
        if (others.nmat == 0) return 0;
        job_in = &others;
    }
    if (ntok == 1 && g_dp4a && job_in->xq) {
        lb_job rest;
        int rc = gemv_q8act(*job_in, x, &rest);
        if (rc) return rc;
        return rest.nmat ? gemv_float(&rest, x, ldx, ntok) : 0;
    }
    if (ntok > 1) {   // a prompt pass: the CPU's activation rounding first (in place: x is this job's own input)
        int bs = 0;
        for (int i = 0; i < job_in->nmat; i++) {
            const int t = job_in->m[i].type, b = t == LB_Q8_0 ? 32 : is_kquant(t) ? 256 : -1;
            bs = i == 0 || bs == b ? b : -1;
        }
        if (bs > 0) {
            const int cols = job_in->m[0].cols, wpb = 4, nblk = (cols + bs - 1) / bs;
            cudaError_t r = launch(actq_kernel, dim3((nblk + wpb - 1) / wpb, ntok), dim3(32 * wpb), (float*)x, ldx, cols, bs);
            if (r != cudaSuccess) return fail("actq_kernel launch", r);
            CKL("actq_kernel");
        }
    }
    return mma ? gemm_mma(*job_in, x, ldx, ntok) : gemv_float(job_in, x, ldx, ntok);
}

LB_API int lb_embed(const lb_mat* m, uint64_t ids, int n, uint64_t out) {
    cudaError_t r = launch(embed_kernel, dim3(n), dim3(256), *m, (const int32_t*)ids, (float*)out);
    if (r != cudaSuccess) return fail("embed_kernel launch", r);
    CKL("embed_kernel");
    return 0;
}

LB_API int lb_dequant(const lb_mat* m, uint64_t out) {
    dequant_kernel<<<m->rows, 256, 0, g_stream>>>(*m, (float*)out);
    CKL("dequant_kernel");
    return 0;
}

LB_API int lb_rmsnorm(uint64_t x, uint64_t w, uint64_t out, int n, int dim, float eps, uint64_t xq, int cap) {
    if (dim > NORM_MAX) { snprintf(g_err, sizeof g_err, "rmsnorm of %d > %d values", dim, NORM_MAX); return -1; }
    if (xq && (n != 1 || (dim + 255) >> 8 > cap)) { snprintf(g_err, sizeof g_err, "rmsnorm: quantized output needs one row of <= %d blocks", cap); return -1; }
    if (!g_dp4a) xq = 0;
    if (n == 1) {
        cudaError_t r = launch(rmsnorm_mb_kernel<NORM_MB>, dim3((dim + 255) / 256), dim3(NORM_MB), (const float*)x, (const float*)w, (float*)out,
                               dim, eps, (uint8_t*)xq, cap);
        if (r != cudaSuccess) return fail("rmsnorm_mb_kernel launch", r);
        CKL("rmsnorm_mb_kernel");
        return 0;
    }
    cudaError_t r = launch(rmsnorm_kernel, dim3(n), dim3(NORM_THREADS), (const float*)x, (const float*)w, (float*)out, dim, eps,
                           (uint8_t*)xq, cap);
    if (r != cudaSuccess) return fail("rmsnorm_kernel launch", r);
    CKL("rmsnorm_kernel");
    return 0;
}

LB_API int lb_rope_store(uint64_t q, int ldq, uint64_t k, uint64_t v, int ldkv, uint64_t cosT, uint64_t sinT,
                         uint64_t kc, uint64_t vc, uint64_t pos0, int n, int H, int KVH, int D) {
    rope_store_kernel<<<n, 256, 0, g_stream>>>((float*)q, ldq, (const float*)k, (const float*)v, ldkv, (const float*)cosT, (const float*)sinT,
                                               (__half*)kc, (__half*)vc, (const int32_t*)pos0, H, KVH, D);
    CKL("rope_store_kernel");
    return 0;
}

LB_API int lb_attention(uint64_t q, uint64_t kc, uint64_t vc, uint64_t out, uint64_t pos0, int n, int H, int KVH, int D) {
    if (D > 256) { snprintf(g_err, sizeof g_err, "head_dim %d > 256 is not supported by the CUDA attention kernel", D); return -1; }
    cudaError_t r = launch(attention_kernel, dim3(H, n), dim3(32 * ATT_WARPS), (const float*)q, (__half*)kc, (__half*)vc, (float*)out,
                           (const int32_t*)pos0, H, KVH, D, (const float*)nullptr, (const float*)nullptr, (const float*)nullptr, (const float*)nullptr);
    if (r != cudaSuccess) return fail("attention_kernel launch", r);
    CKL("attention_kernel");
    return 0;
}

// one decode token: RoPE on q and k, the k/v cache store and attention in one launch; with xq
// (and dp4a decode on) the output is then quantized for wo by a quant_x launch of one-warp blocks
LB_API int lb_rope_attention(uint64_t q, uint64_t k, uint64_t v, uint64_t cosT, uint64_t sinT, uint64_t kc, uint64_t vc,
                             uint64_t out, uint64_t pos0, int H, int KVH, int D, uint64_t xq, int cap) {
    if (D > 256 || D % 2) { snprintf(g_err, sizeof g_err, "head_dim %d is not supported by the CUDA attention kernel", D); return -1; }
    if (xq && (H * D + 255) >> 8 > cap) { snprintf(g_err, sizeof g_err, "attention: quantized output needs <= %d blocks", cap); return -1; }
    if (!g_dp4a) xq = 0;
    cudaError_t r = launch(attn_decode_kernel, dim3(H), dim3(ATT_THREADS), (const float*)q, (__half*)kc, (__half*)vc, (float*)out,
                           (const int32_t*)pos0, H, KVH, D, (const float*)k, (const float*)v, (const float*)cosT, (const float*)sinT);
    if (r != cudaSuccess) return fail("attn_decode_kernel launch", r);
    CKL("attn_decode_kernel");
    if (xq) {
        const int nbx = (H * D + 255) >> 8;
        r = launch(quant_x_kernel, dim3(nbx), dim3(32), (const float*)out, H * D, (uint8_t*)xq, cap);
        if (r != cudaSuccess) return fail("quant_x_kernel launch", r);
        CKL("quant_x_kernel");
    }
    return 0;
}

// state: 2 zeroed 64-bit words (lb_malloc + lb_memset once); out: device view of mapped host memory or 0
LB_API int lb_argmax_next(uint64_t logits, int n, uint64_t state, uint64_t io, uint64_t out) {
    cudaError_t r = launch(argmax_kernel, dim3(ARGMAX_BLOCKS), dim3(ARGMAX_THREADS), (const float*)logits, n, (unsigned long long*)state,
                           (int32_t*)io, (int32_t*)out);
    if (r != cudaSuccess) return fail("argmax_kernel launch", r);
    CKL("argmax_kernel");
    return 0;
}
// pinned host memory the kernels can write (zero-copy): *host for the CPU, *dev for the kernels
LB_API int lb_host_alloc_mapped(uint64_t* host, uint64_t* dev, size_t n) {
    void* p;
    CK(cudaHostAlloc(&p, n, cudaHostAllocMapped));
    void* d = nullptr;
    cudaError_t r = cudaHostGetDevicePointer(&d, p, 0);
    if (r != cudaSuccess) { cudaFreeHost(p); return fail("cudaHostGetDevicePointer", r); }
    *host = (uint64_t)p; *dev = (uint64_t)d;
    return 0;
}
LB_API int lb_event_sync(uint64_t ev) { CK(cudaEventSynchronize((cudaEvent_t)ev)); return 0; }

// CUDA graphs: the decode step is captured once and replayed (positions come from device memory)
LB_API int lb_capture_begin(void) { CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal)); return 0; }
LB_API int lb_capture_end(uint64_t* exec) {
    cudaGraph_t g;
    CK(cudaStreamEndCapture(g_stream, &g));
    cudaGraphExec_t e;
    cudaError_t r = cudaGraphInstantiate(&e, g, 0);
    cudaGraphDestroy(g);
    if (r != cudaSuccess) return fail("cudaGraphInstantiate", r);
    CK(cudaGraphUpload(e, g_stream));   // the first launch then does not pay for the upload
    *exec = (uint64_t)e;
    return 0;
}
LB_API int lb_graph_launch(uint64_t exec) { CK(cudaGraphLaunch((cudaGraphExec_t)exec, g_stream)); return 0; }
LB_API int lb_graph_free(uint64_t exec) { CK(cudaGraphExecDestroy((cudaGraphExec_t)exec)); return 0; }

// timing with device events on the runtime's stream
LB_API int lb_event_new(uint64_t* ev) { cudaEvent_t e; CK(cudaEventCreate(&e)); *ev = (uint64_t)e; return 0; }
LB_API int lb_event_record(uint64_t ev) { CK(cudaEventRecord((cudaEvent_t)ev, g_stream)); return 0; }
LB_API int lb_event_ms(uint64_t a, uint64_t b, float* ms) { CK(cudaEventSynchronize((cudaEvent_t)b)); CK(cudaEventElapsedTime(ms, (cudaEvent_t)a, (cudaEvent_t)b)); return 0; }
LB_API int lb_event_free(uint64_t ev) { CK(cudaEventDestroy((cudaEvent_t)ev)); return 0; }
