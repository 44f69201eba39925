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
from lowbit.errors import ConvertError

from .measure_cache import measure  # noqa: F401  (the measuring step of a --target-bpw conversion)


def _candidates(kind):
    """The types whose QuantType.candidate is `kind`, smallest first."""
    return [n for n, qt in sorted(quants.TYPES.items(), key=lambda kv: kv[1].block_bytes / kv[1].block_size)
            if qt.candidate == kind]


# The types a weight may get by default (QuantType.candidate == "default"): the k-quants and q8_0,
# which have fast native kernels on every backend. Measurements are cached per type, so adding a
# type measures only the new type.
CANDIDATES = _candidates("default")
# Types a user may opt in to (`--candidates +q4_ke.h,+cbk4`): q4_ke and the codebook types, plain or
# with Huffman-coded indices (.h; their bytes are the encoded size of each tensor, which depends on it).
# Not the default: their CPU kernels are slower than the k-quants' (docs/results/codebook-*.md).
OPT_IN = _candidates("opt-in")
KNAPSACK_UNITS = 100_000      # the budget's resolution for the knapsack allocation (see allocate)
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
