"""GPTQ-style error feedback: the method, the damped inverse Cholesky factor, and the dispatch to
each type's own routine (QuantType.gptq: the k-quants in lowbit/quants/kquant_gptq.py, q4_ke in
lowbit/quants/q4ke.py, the codebook types cbk2, cbk4, d4l2 as GPTVQ in lowbit/quants/vq.py, D-weight
vectors snapped under the inverse-Hessian metric; `.h` variants code their base's bytes).

The layer's squared output error over calibration inputs X is tr(E H E^T) with E = W - Q and
H = X^T X / n (recorded by `lowbit imatrix --hessian`). GPTQ quantizes W column by column and,
after each column, spreads that column's rounding error over the columns not yet quantized so
that the output error, not the weight error, is minimized; the Cholesky factor U of the damped
H^-1 (H^-1 = U^T U, U upper) gives the update: W[:, j>i] -= (w_i - q_i) / U[i,i] * U[i, j>i].
"""
import numpy as np

from lowbit import quants
from lowbit.errors import ConvertError

DEFAULT_DAMP = 0.01                 # fraction of mean(diag H) added to the diagonal


def inverse_cholesky(H: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Upper U with U^T U = (H + damp * mean(diag H) * I)^-1; channels never seen (diag 0) get
    a unit diagonal. Damping grows tenfold until H is positive definite."""
    H = np.array(H, dtype=np.float64)
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    mean = float(np.mean(np.diag(H)))
    for _ in range(6):
        try:
            Hd = H + damp * mean * np.eye(H.shape[0])
            Lc = np.linalg.cholesky(Hd)                      # Hd = Lc Lc^T
            Linv = np.linalg.inv(Lc)
            return np.ascontiguousarray(np.linalg.cholesky(Linv.T @ Linv).T)
        except np.linalg.LinAlgError:
            damp *= 10
    raise ConvertError("covariance matrix is not positive definite even with heavy damping")


def gptq_quantize(qtype: str, w: np.ndarray, H: np.ndarray, imatrix=None, damp: float = DEFAULT_DAMP,
                  U: np.ndarray = None) -> np.ndarray:
    """Quantize float32[rows, cols] to `qtype` with GPTQ error feedback under the input
    second-moment matrix H (float[cols, cols]); returns the tensor bytes in the type's ordinary
    layout, through the type's own routine (QuantType.gptq). `imatrix` (default diag H) weights the
    scale fits; a precomputed inverse_cholesky(H) can be passed as U (it depends only on H)."""
    qt = quants.get(qtype)
    if qt.gptq is None:
        raise ValueError(f"GPTQ applies to {', '.join(gptq_types())}, not {qtype}")
    w = np.asarray(w, dtype=np.float32)
    if H.shape != (w.shape[-1], w.shape[-1]):
        raise ValueError(f"covariance is {list(H.shape)}, the weight has {w.shape[-1]} columns")
    return qt.gptq(w, inverse_cholesky(H, damp) if U is None else U, np.diag(H) if imatrix is None else imatrix)


def gptq_types() -> list:
    """The types with a GPTQ routine (other types are quantized as usual)."""
    return [name for name, qt in quants.TYPES.items() if qt.gptq is not None]


def output_error(qtype: str, w: np.ndarray, raw: np.ndarray, H: np.ndarray = None, imatrix=None) -> float:
    """The layer's squared output error summed over rows, per calibration token:
    tr(E H E^T) with E = w - dequant(raw); with only an importance vector, its diagonal
    approximation sum(E^2 * imatrix); with neither, sum(E^2)."""
    E = np.asarray(w, np.float64) - quants.get(qtype).dequantize(raw, w.shape).astype(np.float64)
    if H is not None:
        return float(np.einsum("ij,ij->", E @ np.asarray(H, np.float64), E))
    if imatrix is not None:
        return float(((E * E) @ np.asarray(imatrix, np.float64)).sum())
    return float((E * E).sum())
