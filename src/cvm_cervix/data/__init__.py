"""Datasets: adapters per on-disk layout, manifests and splits, the synthetic generator, the cache."""

from ._adapters import COMBINED_CLASSES, Listing, adapter_kinds, list_dataset, listing_digest, register_adapter
from ._cache import build_cache, decode_rgb, load_cache, load_image, to_rgb
from ._manifest import (
    SPLITS,
    assign_splits,
    combine_frames,
    conversions,
    duplicate_report,
    read_manifest,
    records_frame,
    split_counts,
    summarize,
)
from ._prepare import build_stain_cache, prepare_dataset
from ._synthetic import CLASS_SETS, class_names, make_synthetic_dataset, render_cell

__all__ = [
    "COMBINED_CLASSES",
    "CLASS_SETS",
    "Listing",
    "SPLITS",
    "adapter_kinds",
    "assign_splits",
    "build_cache",
    "build_stain_cache",
    "class_names",
    "combine_frames",
    "conversions",
    "decode_rgb",
    "duplicate_report",
    "list_dataset",
    "listing_digest",
    "load_cache",
    "load_image",
    "make_synthetic_dataset",
    "prepare_dataset",
    "read_manifest",
    "records_frame",
    "register_adapter",
    "render_cell",
    "split_counts",
    "summarize",
    "to_rgb",
]
