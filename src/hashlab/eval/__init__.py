"""Evaluation: retrieval metrics for float and binary codes."""

from __future__ import annotations

from hashlab.eval.metrics import (
    ap_at_k_from_relevance,
    ap_from_relevance,
    cosine_similarities,
    default_pr_ranks,
    hamming_pr_curve_from_relevance,
    precision_at_k_from_relevance,
    radius_precision_recall_from_relevance,
    rank_by_distance,
    rank_by_similarity,
    rank_pr_curve_from_relevance,
    recall_at_k_from_relevance,
    relevance_matrix,
    retrieval_metrics,
)

__all__ = [
    "retrieval_metrics",
    "relevance_matrix",
    "cosine_similarities",
    "rank_by_distance",
    "rank_by_similarity",
    "ap_from_relevance",
    "ap_at_k_from_relevance",
    "precision_at_k_from_relevance",
    "recall_at_k_from_relevance",
    "radius_precision_recall_from_relevance",
    "hamming_pr_curve_from_relevance",
    "rank_pr_curve_from_relevance",
    "default_pr_ranks",
]
