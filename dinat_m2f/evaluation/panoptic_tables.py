"""Panoptic quality results as markdown tables (the evaluator's log and the command line)."""

from __future__ import annotations

from tabulate import tabulate

from .panoptic_quality import PQResult

__all__ = ["per_class_table", "summary_table"]


def summary_table(result: PQResult) -> str:
    """PQ / SQ / RQ (percent) and #categories for All, Things and Stuff."""
    rows = [[name, 100 * m.pq, 100 * m.sq, 100 * m.rq, m.n] for name, m in result.groups().items()]
    return tabulate(
        rows,
        headers=["", "PQ", "SQ", "RQ", "#categories"],
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )


def per_class_table(result: PQResult) -> str:
    """One row per category: id, name, thing/stuff, PQ / SQ / RQ (percent), tp, fp, fn;
    metrics of categories absent from ground truth and predictions print as nan."""
    rows = [
        [
            c.category.id,
            c.category.name,
            "thing" if c.category.isthing else "stuff",
            100 * c.pq,
            100 * c.sq,
            100 * c.rq,
            c.counts.tp,
            c.counts.fp,
            c.counts.fn,
        ]
        for c in result.per_class.values()
    ]
    return tabulate(
        rows,
        headers=["id", "category", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"],
        tablefmt="pipe",
        floatfmt=".3f",
    )
