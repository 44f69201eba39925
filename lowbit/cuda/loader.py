"""Find and load the built library (build.library) with cffi in ABI mode (dlopen), its C API
declarations (CDEF, defined by LB_API in kernels/api.cu), and thin checked wrappers."""
import threading

from cffi import FFI

from .build import CudaUnavailable, library
from ..errors import LowbitError

CDEF = """
typedef struct {
    uint64_t body, tail, bias, xtra;
    int32_t type, rows, cols, pad;
    uint64_t body_row, tail_row, xtra_row;
} lb_mat;
typedef struct {
    lb_mat m[3];
    uint64_t y[3];
    int32_t ldy[3];
    int32_t nmat;
    int32_t mode;
    int32_t rpw[3];
    int32_t wcnt[3];
    int32_t ksplit;
    int32_t xq_ready;
    uint64_t xq;
    int32_t xq_cap;
} lb_job;
const char* lb_last_error(void);
int lb_init(int device, char* name, int name_len, int* cc, long long* total_mem, int* sms);
int lb_malloc(uint64_t* ptr, size_t bytes);
int lb_free(uint64_t ptr);
int lb_mem_info(size_t* free_b, size_t* total_b);
int lb_memset(uint64_t ptr, int v, size_t n);
int lb_htod(uint64_t dst, const void* src, size_t n);
int lb_htod_async(uint64_t dst, const void* src, size_t n);
int lb_dtoh(void* dst, uint64_t src, size_t n);
int lb_host_alloc(uint64_t* ptr, size_t n);
int lb_host_free(uint64_t ptr);
int lb_sync(void);
int lb_repack(uint64_t src, uint64_t body, uint64_t tail, size_t nblocks, int block_bytes, int body_off, int body_len);
int lb_repack_q8(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols);
int lb_repack_vq(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols, int type);
int lb_gemv(const lb_job* job, uint64_t x, int ldx, int ntok);
int lb_embed(const lb_mat* m, uint64_t ids, int n, uint64_t out);
int lb_dequant(const lb_mat* m, uint64_t out);
int lb_rmsnorm(uint64_t x, uint64_t w, uint64_t out, int n, int dim, float eps, uint64_t xq, int cap);
int lb_rope_store(uint64_t q, int ldq, uint64_t k, uint64_t v, int ldkv, uint64_t cosT, uint64_t sinT,
                  uint64_t kc, uint64_t vc, uint64_t pos0, int n, int H, int KVH, int D);
int lb_attention(uint64_t q, uint64_t kc, uint64_t vc, uint64_t out, uint64_t pos0, int n, int H, int KVH, int D);
int lb_rope_attention(uint64_t q, uint64_t k, uint64_t v, uint64_t cosT, uint64_t sinT, uint64_t kc, uint64_t vc,
                      uint64_t out, uint64_t pos0, int H, int KVH, int D, uint64_t xq, int cap);
int lb_capture_begin(void);
int lb_capture_end(uint64_t* exec);
int lb_graph_launch(uint64_t exec);
int lb_graph_free(uint64_t exec);
int lb_event_new(uint64_t* ev);
int lb_event_record(uint64_t ev);
int lb_event_ms(uint64_t a, uint64_t b, float* ms);
int lb_event_free(uint64_t ev);
int lb_event_sync(uint64_t ev);
int lb_argmax_next(uint64_t logits, int n, uint64_t state, uint64_t io, uint64_t out);
int lb_host_alloc_mapped(uint64_t* host, uint64_t* dev, size_t n);
"""


class CudaError(LowbitError):
    pass


class Runtime:
    def __init__(self, device=0):
        self.ffi = ffi = FFI()
        ffi.cdef(CDEF)
        path = library()
        try:
            self.lib = ffi.dlopen(str(path))
        except OSError as e:
            raise CudaUnavailable(f"cannot load {path}: {e}") from None
        name = ffi.new("char[256]")
        cc, mem, sms = ffi.new("int*"), ffi.new("long long*"), ffi.new("int*")
        rc = self.lib.lb_init(device, name, 256, cc, mem, sms)
        if rc != 0:
            raise CudaUnavailable(f"CUDA initialisation failed: {ffi.string(self.lib.lb_last_error()).decode()}")
        self.name, self.cc, self.total_mem, self.sms = ffi.string(name).decode(), cc[0], mem[0], sms[0]
        self.path = path

    def describe(self):
        return f"{self.name} (sm_{self.cc}, {self.total_mem / 2**30:.0f} GiB, {self.sms} SMs)"

    def check(self, rc, what):
        if rc != 0:
            raise CudaError(f"CUDA {what} failed: {self.ffi.string(self.lib.lb_last_error()).decode()}")

    def call(self, fn, *args):
        self.check(getattr(self.lib, fn)(*args), fn)

    def malloc(self, nbytes):
        p = self.ffi.new("uint64_t*")
        rc = self.lib.lb_malloc(p, int(nbytes))
        if rc != 0:
            free, total = self.mem_info()
            raise CudaError(f"cannot allocate {nbytes / 2**20:.1f} MiB on the GPU ({free / 2**20:.0f} MiB free of "
                            f"{total / 2**20:.0f}): {self.ffi.string(self.lib.lb_last_error()).decode()}")
        return p[0]

    def mem_info(self):
        f, t = self.ffi.new("size_t*"), self.ffi.new("size_t*")
        self.lib.lb_mem_info(f, t)
        return f[0], t[0]

    def htod(self, dst, array):
        buf = self.ffi.from_buffer(array)
        self.call("lb_htod", dst, buf, len(buf))

    def dtoh(self, out, src):
        buf = self.ffi.from_buffer(out, require_writable=True)
        self.call("lb_dtoh", buf, src, len(buf))
        return out


_lock = threading.Lock()
_runtime = None


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime
