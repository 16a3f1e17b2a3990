"""Fetching pretrained weights once, before any training: the workflow's ``weights`` step.

Training jobs then find the files in the cache (on a cluster, compute nodes often have no network;
the ``weights`` step runs on the submit host). Fetching goes through the libraries' own loaders
(timm's Hugging Face hub download, torchvision's ``load_state_dict_from_url``), so a file already in
the cache, in the layout they expect, is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._io import sha256_file
from ..errors import CvmError
from ._catalog import get_model_spec
from ._registry import create_model
from ._weights import WeightsDoNotFit


def pretrained_sources(model: torch.nn.Module) -> list[dict]:
    """Where each network of ``model`` takes its pretrained weights from (library, hub id or URL)."""
    return [
        dict(m.pretrained_source, module=name)
        for name, m in model.backbone.named_modules()
        if getattr(m, "pretrained_source", None)
    ]


def _url_folder(source: dict, cache_dir: str | os.PathLike | None) -> Path:
    if source["library"] == "timm" and cache_dir:
        return Path(cache_dir) / "timm"
    return Path(cache_dir) / "torch" / "checkpoints" if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"


def _cached_file(source: dict, cache_dir: str | os.PathLike | None) -> Path | None:
    if not source["hub_id"]:
        return _url_folder(source, cache_dir) / Path(source["url"]).name
    from huggingface_hub import try_to_load_from_cache

    hf_cache = str(Path(cache_dir) / "timm") if cache_dir else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(source["hub_id"], filename, cache_dir=hf_cache)
        if isinstance(found, str):
            return Path(found)
    return None


def _where(source: dict, cache_dir: str | os.PathLike | None) -> str:
    if source["hub_id"]:
        root = Path(cache_dir) / "timm" if cache_dir else "the Hugging Face hub cache"
        return f"Hugging Face hub {source['hub_id']} (model.safetensors) into {root}"
    return f"{source['url']} into {_url_folder(source, cache_dir)}"


def fetch_pretrained(name: str, img_size: int = 224, cache_dir: str | os.PathLike | None = None) -> dict:
    """Fetch (or find in the cache) every pretrained file model ``name`` needs; describe them.

    Raises one :class:`CvmError` naming the model, the file and where to put it when it cannot be
    had (no network and not in the cache).
    """
    spec = get_model_spec(name)
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    size = max(img_size, spec.min_img_size)
    try:
        model = create_model(name, 2, size, pretrained=True, cache_dir=cache_dir)
    except WeightsDoNotFit as err:  # fetched (or found) and read, but its tensors do not fit
        sources = pretrained_sources(create_model(name, 2, size, cache_dir=cache_dir))
        found = [str(p) for p in (_cached_file(s, cache_dir) for s in sources) if p and p.is_file()]
        raise CvmError(
            f"model {name!r}: its pretrained weights were fetched ({', '.join(found) or 'the cache'}) but do "
            f"not fit this model at img_size {size}: {err}. Delete the file and run the weights step again where "
            f"there is network (README: Models), or set train.weights: {{{name}: FILE}}"
        ) from None
    except CvmError:
        raise
    except Exception as err:  # network errors of urllib, requests and huggingface_hub, missing cache entries
        sources = pretrained_sources(create_model(name, 2, size, cache_dir=cache_dir))
        where = "; ".join(_where(s, cache_dir) for s in sources)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CvmError(
            f"model {name!r}: its pretrained weights cannot be fetched ({reason[:160]}). Run the "
            f"workflow's weights step where there is network, or put the file there: {where}; "
            f"or set train.weights: {{{name}: FILE}}"
        ) from None
    files = []
    for source in pretrained_sources(model):
        path = _cached_file(source, cache_dir)
        files.append(
            {
                **source,
                "path": str(path) if path else None,
                "sha256": sha256_file(path) if path and path.is_file() else None,
            }
        )
    return {"model": name, "img_size": img_size, "cache_dir": str(cache_dir or ""), "files": files}
