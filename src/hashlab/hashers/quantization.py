"""Quantization-based codes: product quantization (PQ) via FAISS.

Jégou, Douze & Schmid, "Product quantization for nearest neighbor search", TPAMI 2011.
Quantization hash function (learning-to-hash survey): ``h(x) = argmin_k ‖x − c_k‖``.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from hashlab.hashers.base import BaseHasher
from hashlab.hashers.registry import HASHERS
from hashlab.index.codes import check_packed, unpack_bits
from hashlab.validation import check_int

__all__ = ["PQHash"]

_CHUNK = 4096  # queries per distance-table chunk


@HASHERS.register("pq")
class PQHash(BaseHasher):
    """Product-quantization codes (FAISS ``ProductQuantizer``), packed like binary codes.

    The (zero-padded) feature vector is split into ``M = n_bits / nbits_per_sub`` sub-vectors
    of equal length; each is quantized by its own k-means codebook of ``K = 2**nbits_per_sub``
    centroids: ``h_m(x) = argmin_k ‖x_m − c_{m,k}‖²``. The code is the concatenation of the M
    indices, ``n_bits`` in all, in FAISS's layout: index ``m`` occupies code bits
    ``[m · nbits_per_sub, (m + 1) · nbits_per_sub)``, least significant bit first, packed
    little-endian within bytes — the same layout as :func:`hashlab.index.codes.pack_bits`, so
    ``output="bits"`` unpacks it and ``pack_bits`` of those bits gives the packed codes back.

    **PQ codes are not Hamming codes.** Two indices that differ in one bit are not nearer
    centroids than two that differ in all bits, so ranking PQ codes by Hamming distance is not
    meaningful. Compare them with :meth:`distances`: asymmetric distance (ADC,
    ``‖x − c(y)‖²``, query not quantized) or symmetric distance (SDC, ``‖c(x) − c(y)‖²``);
    :meth:`decode` gives the reconstructions ``c(y)``. There is no ``decision_function``.

    Parameters
    ----------
    n_bits : int, default=64
        Code length; a multiple of ``nbits_per_sub``.
    nbits_per_sub : int, default=8
        Bits per sub-quantizer (1..16); fitting needs ``n_samples >= 2**nbits_per_sub``.
    n_iter : int, default=25
        k-means iterations per codebook.
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform`` ("signs" is ``2 · bits − 1``, for API symmetry only).
    random_state : int, RandomState or None, default=None
        Seed of the k-means initialisation (FAISS ``ClusteringParameters.seed``).

    Attributes
    ----------
    n_subquantizers_ : int
        M.
    n_features_padded_ : int
        Feature count after zero padding to a multiple of M.
    centroids_ : ndarray float32 [M, 2**nbits_per_sub, n_features_padded_ / M]
        The codebooks.
    """

    _has_projection = False

    def __init__(
        self,
        n_bits: int = 64,
        nbits_per_sub: int = 8,
        n_iter: int = 25,
        output: str = "packed",
        random_state: Any = None,
    ) -> None:
        self.n_bits = n_bits
        self.nbits_per_sub = nbits_per_sub
        self.n_iter = n_iter
        self.output = output
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        nsub = check_int(self.nbits_per_sub, "nbits_per_sub")
        if nsub > 16:
            raise ValueError(f"nbits_per_sub: expected an int in [1, 16], got {nsub}")
        if self.n_bits % nsub:
            raise ValueError(
                f"n_bits={self.n_bits} must be a multiple of nbits_per_sub={nsub} "
                "(n_bits = number of sub-quantizers x bits per sub-quantizer)"
            )
        check_int(self.n_iter, "n_iter")

    def _check_fit_shape(self, X: np.ndarray) -> None:
        ksub = 2 ** int(self.nbits_per_sub)
        if X.shape[0] < ksub:
            raise ValueError(
                f"PQHash needs at least 2**nbits_per_sub={ksub} samples to train its codebooks, "
                f"got n_samples={X.shape[0]}"
            )

    # ---------------------------------------------------------------------------- fitting

    def _pad(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((X.shape[0], self.n_features_padded_), dtype=np.float32)
        out[:, : X.shape[1]] = X
        return out

    def _quantizer(self) -> faiss.ProductQuantizer:
        """A FAISS ProductQuantizer holding ``centroids_`` (rebuilt: FAISS objects don't pickle)."""
        pq = faiss.ProductQuantizer(
            self.n_features_padded_, self.n_subquantizers_, int(self.nbits_per_sub)
        )
        faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids_).ravel(), pq.centroids)
        pq.sync_transposed_centroids()
        return pq

    def _fit(self, X: np.ndarray, y: Any) -> None:
        M = int(self.n_bits) // int(self.nbits_per_sub)
        self.n_subquantizers_ = M
        self.n_features_padded_ = -(-X.shape[1] // M) * M
        pq = faiss.ProductQuantizer(self.n_features_padded_, M, int(self.nbits_per_sub))
        pq.cp.seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        pq.cp.niter = int(self.n_iter)
        pq.verbose = False
        pq.train(self._pad(X))
        self.centroids_ = faiss.vector_to_array(pq.centroids).reshape(M, pq.ksub, pq.dsub).copy()

    # ---------------------------------------------------------------------------- encoding

    def transform(self, X: Any) -> np.ndarray:
        """PQ codes of ``X`` in the format given by ``output`` (packed: FAISS's code bytes)."""
        self._check_output()
        X = self._validate_transform(X)
        codes = self._quantizer().compute_codes(self._pad(X))
        if self.output == "packed":
            return codes
        bits = unpack_bits(codes, int(self.n_bits))
        if self.output == "bits":
            return bits
        return bits.astype(np.float32) * 2.0 - 1.0

    def codes_to_indices(self, codes: Any) -> np.ndarray:
        """Packed codes ``[n, ceil(n_bits / 8)]`` to centroid indices int64 ``[n, M]``."""
        check_is_fitted(self)
        nsub = int(self.nbits_per_sub)
        bits = unpack_bits(codes, int(self.n_bits)).reshape(-1, self.n_subquantizers_, nsub)
        return bits.astype(np.int64) @ (1 << np.arange(nsub, dtype=np.int64))

    def quantize(self, X: Any) -> np.ndarray:
        """Centroid index of each sub-vector, int64 ``[n, M]``: ``argmin_k ‖x_m − c_{m,k}‖²``."""
        X = self._validate_transform(X)
        return self.codes_to_indices(self._quantizer().compute_codes(self._pad(X)))

    def decode(self, codes: Any) -> np.ndarray:
        """Reconstructions ``c(y)`` float32 ``[n, n_features]`` of packed codes."""
        check_is_fitted(self)
        check_packed(codes, int(self.n_bits), "codes")
        arr = np.ascontiguousarray(codes, dtype=np.uint8)
        return self._quantizer().decode(arr)[:, : self.n_features_in_]

    def distances(self, X: Any, codes: Any, symmetric: bool = False) -> np.ndarray:
        """Squared L2 distances float32 ``[n_queries, n_codes]`` from queries ``X`` to codes.

        ``symmetric=False`` (ADC): ``Σ_m ‖x_m − c_{m, k_m(y)}‖² = ‖x − c(y)‖²``;
        ``symmetric=True`` (SDC): the query is quantized too, ``‖c(x) − c(y)‖²``. Computed
        from per-sub-quantizer lookup tables, ``M`` gathers of ``[n_queries, n_codes]``.
        """
        X = self._validate_transform(X)
        idx = self.codes_to_indices(codes)  # [ndb, M]
        C = self.centroids_.astype(np.float64)  # [M, K, dsub]
        M, _, dsub = C.shape
        Xp = self._pad(X).astype(np.float64).reshape(X.shape[0], M, dsub)
        if symmetric:
            qidx = self.quantize(X)
            Xp = C[np.arange(M)[None, :], qidx]  # quantized queries [nq, M, dsub]
        out = np.zeros((X.shape[0], idx.shape[0]), dtype=np.float32)
        for s in range(0, X.shape[0], _CHUNK):
            xs = Xp[s : s + _CHUNK]
            # tables[q, m, k] = ‖x_m − c_{m,k}‖²
            tables = (
                np.einsum("qmd,qmd->qm", xs, xs)[:, :, None]
                - 2.0 * np.einsum("qmd,mkd->qmk", xs, C)
                + np.einsum("mkd,mkd->mk", C, C)[None]
            )
            np.maximum(tables, 0.0, out=tables)
            tables = tables.astype(np.float32)
            for m in range(M):
                out[s : s + _CHUNK] += tables[:, m, :][:, idx[:, m]]
        return out
