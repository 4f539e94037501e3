"""Kernels from other Python environments (issue: kernels). Placeholder until that lands."""

from __future__ import annotations


def build_kernel_files(spec, paths, host) -> list:
    return []
