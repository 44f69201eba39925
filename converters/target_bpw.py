"""`lowbit convert --target-bpw X`: one type per weight, chosen to minimize the total measured
output error at a file of at most X bits per checkpoint weight.

Every 2-D weight is quantized to each candidate type (with GPTQ where the importance matrix has
its covariance); the error of a (tensor, type) pair is the layer's squared output error per
calibration token, tr(E H E^T) with E = W - dequant(Q) (gptq.output_error), so errors of different
tensors are in comparable units (squared error of what the layer writes, per token). The token
embedding lookup has no input activations: its error is the mean squared error of one looked-up
row (sum(E^2) / vocab: a uniform token distribution); a tied embedding adds it to its
output-projection error. Squared errors of different places cost the network very differently
(an error in the logits is spread over the whole vocabulary; one in an early layer is amplified),
so when the imatrix file has measured sensitivities (KL divergence per unit of output error,
from noise injected at each weight's output) every error is multiplied by its weight's: the
allocation then minimizes an estimate of the total KL divergence.

Allocation: per tensor, the lower convex hull of its (bytes, error) points; then greedy marginal
gain over hull steps (largest error reduction per byte first) while the file stays under budget,
which is optimal for the convex relaxation (a Lagrangian allocation); and a multiple-choice knapsack
over every non-dominated type of every weight (dynamic programming over the budget in 100,000 parts),
exact up to that rounding; the one with less summed error is used.

The (bytes, error) measurements are cached on disk per weight (converters/measure_cache.py), so
converting the same checkpoint with the same imatrix at another target measures nothing again."""
import heapq

import numpy as np

from lowbit import quants
from lowbit.imatrix import LOOKUP
from lowbit.errors import ConvertError

from . import measure_cache
from .gptq import GPTQ_TYPES, gptq_quantize, inverse_cholesky, output_error

# The types a weight may get by default, in any order: the k-quants, which have fast native kernels on
# every backend. Measurements are cached per type, so adding a type measures only the new type.
CANDIDATES = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0"]
# Types a user may opt in to (`--candidates +q4_ke.h,+cbk4`): q4_ke and the codebook types, plain or
# with Huffman-coded indices (.h; their bytes are the encoded size of each tensor, which depends on it).
# Not the default: their CPU kernels are slower than the k-quants' (docs/results/codebook-*.md).
KNAPSACK_UNITS = 100_000      # the budget's resolution for the knapsack allocation (see allocate)
OPT_IN = ["q4_ke", "q4_ke.h", "q4_k.h", "cbk4", "cbk4.h", "cbk2", "cbk2.h", "d4l2", "d4l2.h"]
CANDIDATES_HELP = ("comma-separated candidate types for --target-bpw: NAME replaces the default list, +NAME adds "
                   "to it, -NAME removes from it; 'all' = the default plus every opt-in type. Default: "
                   f"{','.join(CANDIDATES)}; opt-in: {','.join(OPT_IN)} (their CPU kernels are slower). "
                   "E.g. --candidates +q4_ke.h,+cbk4,+cbk2")


def parse_candidates(spec) -> list:
    """The candidate list of a --candidates value (a string or a list of items, see CANDIDATES_HELP);
    None -> the default list."""
    if spec is None:
        return list(CANDIDATES)
    items = spec if isinstance(spec, (list, tuple)) else str(spec).replace(" ", ",").split(",")
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise ConvertError("--candidates: expected a comma-separated list of types, e.g. +q4_ke.h,+cbk4")
    known = [t for t in quants.TYPES if t not in ("u8",)]

    def names(item, raw):
        if item == "all":
            return list(CANDIDATES) + OPT_IN
        if item == "default":
            return list(CANDIDATES)
        if item not in known:
            raise ConvertError(f"--candidates: unknown type {raw!r} (known: {', '.join(known)}; or 'all', 'default')")
        return [item]
    plain = [i for i in items if i[0] not in "+-"]
    out = []
    for i in (plain if plain else ["default"]):
        out += [t for t in names(i, i) if t not in out]
    for i in items:
        if i[0] == "+":
            out += [t for t in names(i[1:], i) if t not in out]
        elif i[0] == "-":
            drop = names(i[1:], i)
            out = [t for t in out if t not in drop]
    if not out:
        raise ConvertError(f"--candidates {','.join(items)}: leaves no candidate type")
    return out


def measure(names, shapes, tensor, vectors: dict, covs: dict, tied: bool, use_gptq: bool = True,
            candidates=None, fixed: dict = None, sensitivity: dict = None, log=None, warn=None,
            cache: bool = True) -> dict:
    """{name: {type: (bytes, error, packed uint8[rows, row_bytes] or None)}} for every 2-D weight
    in `names`; `tensor(name)` gives float32 weights; `fixed` {name: type} restricts a tensor to
    one type (overrides); `sensitivity` {weight name or LOOKUP: KL divergence per unit of output
    error} (from `lowbit imatrix --hessian`) turns each error into an estimated KL divergence.
    With `cache`, measurements found in the on-disk cache are reused (their packed bytes are then
    None: the caller quantizes the type it chooses) and new ones are stored; `warn` receives
    the cache's warnings."""
    candidates = CANDIDATES if candidates is None else candidates
    fixed = fixed or {}
    sens = sensitivity or {}
    out = {}
    U_for = {}
    digests = {}           # id(covariance) -> its hash (q/k/v share one matrix)
    for k, name in enumerate(names):
        shape = shapes[name]
        if len(shape) != 2:
            continue
        w = np.asarray(tensor(name), np.float32)
        rows, cols = shape
        H = covs.get(name)
        im = vectors.get(name)
        gptq_here = use_gptq and H is not None
        types = [fixed[name]] if name in fixed else [t for t in candidates if quants.get(t).fits(cols)]
        if not types:
            raise ConvertError(f"{name}: row length {cols} fits none of the candidate types ({', '.join(candidates)}); "
                               "add one that does, e.g. +q4_k (k-quants store any row length)")
        key, cached = None, {}
        if cache:
            if H is not None and id(H) not in digests:
                digests.clear()
                digests[id(H)] = measure_cache.array_digest(H)
            parts = {"imatrix": measure_cache.array_digest(im),
                     "cov": digests[id(H)] if H is not None else "none", "gptq": gptq_here,
                     "sensitivity": sens.get(name, 1.0)}
            if name == "token_embd.weight":
                parts.update(tied=bool(tied), lookup_sensitivity=sens.get(LOOKUP, 1.0))
            key = measure_cache.entry_key(name, measure_cache.array_digest(w), parts)
            cached = measure_cache.load(key, warn)
        U = None
        res = {}
        for t in types:
            if t in cached:
                res[t] = (cached[t][0], cached[t][1], None)
                continue
            qt = quants.get(t)
            if gptq_here and t in GPTQ_TYPES:
                if U is None:
                    U = U_for.get(id(H))
                    if U is None:
                        U_for.clear()          # groups are consecutive: keep only the current factor
                        U = U_for[id(H)] = inverse_cholesky(H)
                raw = gptq_quantize(t, w, H, im, U=U)
            else:
                raw = qt.quantize(w, im)
            if name == "token_embd.weight":
                e = output_error(t, w, raw) / rows * sens.get(LOOKUP, 1.0)     # the lookup: one row per token
                if tied:
                    e += output_error(t, w, raw, H, im) * sens.get(name, 1.0)
            else:
                e = output_error(t, w, raw, H, im) * sens.get(name, 1.0)
            res[t] = (int(raw.nbytes), float(e), raw)
        new = [t for t in types if t not in cached]
        if cache and new:
            measure_cache.save(key, name, {**cached, **{t: res[t][:2] for t in new}}, warn)
        out[name] = res
        if log:
            log(f"target-bpw: measured {name} ({k + 1}/{len(names)}): " +
                ", ".join(f"{t} {v[1]:.4g}{' (cached)' if t in cached else ''}" for t, v in res.items()))
    return out


def _hull(points):
    """Lower convex hull of [(bytes, error, type)] sorted by bytes: the types worth using."""
    pts = sorted(points, key=lambda p: (p[0], p[1]))
    best = []
    for p in pts:          # drop dominated points (more bytes, no less error)
        if best and p[1] >= best[-1][1]:
            continue
        best.append(p)
    hull = []
    for p in best:
        while len(hull) >= 2:
            (b1, e1, _), (b2, e2, _) = hull[-2], hull[-1]
            # remove hull[-1] if it lies on or above the segment hull[-2] -> p
            if (e2 - e1) * (p[0] - b1) >= (p[1] - e1) * (b2 - b1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def _greedy(measured: dict, budget_bytes: int) -> dict:
    """Greedy marginal gain over the convex hulls' steps (a Lagrangian allocation)."""
    hulls = {n: _hull([(b, e, t) for t, (b, e, _) in res.items()]) for n, res in measured.items()}
    pos = {n: 0 for n in hulls}
    total = sum(h[0][0] for h in hulls.values())
    if total > budget_bytes:
        raise ConvertError(f"the smallest types need {total:,} bytes of weights, over the budget of "
                           f"{budget_bytes:,}: the target is too low")
    heap = []

    def push(n):
        h, i = hulls[n], pos[n]
        if i + 1 < len(h):
            db, de = h[i + 1][0] - h[i][0], h[i][1] - h[i + 1][1]
            heapq.heappush(heap, (-de / db, n, i))

    for n in hulls:
        push(n)
    while heap:
        _, n, i = heapq.heappop(heap)
        h = hulls[n]
        db = h[i + 1][0] - h[i][0]
        if total + db > budget_bytes:
            continue           # this step does not fit; smaller steps of other tensors may
        total += db
        pos[n] = i + 1
        push(n)
    return {n: hulls[n][pos[n]][2] for n in hulls}


def allocate(measured: dict, budget_bytes: int, units: int = KNAPSACK_UNITS) -> dict:
    """{name: type} minimizing the summed error with the summed bytes <= budget_bytes: the better of
    the greedy hull allocation and the knapsack solution (the greedy one stalls when one weight's next
    hull step is larger than what is left, e.g. a tied embedding of 60% of the weights going from cbk2
    to cbk4 in one 5 MB step, and it never uses a point off the hull, such as q3_k between the two)."""
    greedy = _greedy(measured, budget_bytes)
    best = _knapsack(measured, budget_bytes, units)
    if best is None:
        return greedy

    def err(types):
        return sum(measured[n][t][1] for n, t in types.items())
    return best if err(best) < err(greedy) else greedy


def _knapsack(measured: dict, budget_bytes: int, units: int):
    """Multiple-choice knapsack by dynamic programming over the budget cut into `units` equal parts
    (each type's bytes rounded up to whole parts, so the result is always within the budget; the
    rounding costs at most one part per weight). Every non-dominated type of a weight is an option,
    not only its hull's. None when even the rounded smallest types do not fit."""
    unit = max(1, -(-int(budget_bytes) // int(units)))
    B = int(budget_bytes) // unit
    names = list(measured)
    dp = np.zeros(B + 1)                    # least error of the weights so far within b parts
    choices, options = [], []
    for n in names:
        pts = sorted(((b, e, t) for t, (b, e, _) in measured[n].items()), key=lambda p: (p[0], p[1]))
        opts = []
        for b, e, t in pts:                 # non-dominated: every next option has less error
            if not opts or e < opts[-1][1]:
                opts.append((-(-b // unit), e, t))
        new = np.full(B + 1, np.inf)
        pick = np.zeros(B + 1, np.int16)
        for i, (c, e, _) in enumerate(opts):
            if c > B:
                continue
            cand = dp[:B + 1 - c] + e
            better = cand < new[c:]
            new[c:][better] = cand[better]
            pick[c:][better] = i
        dp = new
        choices.append(pick)
        options.append(opts)
    if not np.isfinite(dp[B]):
        return None
    out, b = {}, B
    for n, pick, opts in zip(reversed(names), reversed(choices), reversed(options)):
        c, _, t = opts[pick[b]]
        out[n] = t
        b -= c
    return {n: out[n] for n in names}


def summary(measured: dict, types: dict) -> dict:
    return {"weight_bytes": int(sum(measured[n][t][0] for n, t in types.items())),
            "error": float(sum(measured[n][t][1] for n, t in types.items()))}
