"""Label spaces shared between datasets: which classes are normal, and the mappings of the config.

The datasets name their classes differently (SIPaKMeD's five, CRIC's Bethesda six, Herlev's seven
or two). The built-in space is the clinical question, normal vs abnormal, with the same abnormal
list as the report's clinical view (``analysis.abnormal_classes``); ``mappings`` in the config adds
finer ones (class -> shared class). Config validation imports this module to check the transfer
before any job runs; it needs no torch.
"""

from __future__ import annotations

import unicodedata

from .errors import CvmError

BUILTIN = "normal_abnormal"
# Every normal class of the built-in layouts: SIPaKMeD's three normal cell types, CRIC's NILM,
# Herlev's three normal folders (its own spelling) and its two-class task's "Normal".
NORMAL_CLASSES = [
    "NILM",
    "Metaplastic",
    "Parabasal",
    "Superficial-Intermediate",
    "Normal",
    "normal_superficiel",
    "normal_intermediate",
    "normal_columnar",
]


def resolve_mapping(config: dict, name: str) -> dict[str, str]:
    """Class -> shared class of mapping ``name``: the built-in normal/abnormal one or ``mappings.<name>``."""
    if name == BUILTIN:  # 'mappings.normal_abnormal' adds classes to the built-in one
        abnormal = list(config["analysis"]["abnormal_classes"])
        return {
            **{c: "normal" for c in NORMAL_CLASSES if c not in abnormal},
            **{c: "abnormal" for c in abnormal},
            **dict(config.get("mappings", {}).get(name, {})),
        }
    try:
        return dict(config["mappings"][name])
    except KeyError:
        raise CvmError(
            f"config key 'transfer.mapping': no mapping {name!r} (built in: {BUILTIN}; defined under "
            f"'mappings': {', '.join(sorted(config.get('mappings', {}))) or 'none'})"
        ) from None


def check_mapped(classes: list[str], mapping: dict[str, str], name: str, where: str) -> None:
    """Every class must have a shared class: one line naming the first that has none and the fix."""
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise CvmError(
            f"{where}: class {missing[0]!r} has no class in mapping {name!r}"
            f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; add "
            f"'{missing[0]}: <shared class>' under 'mappings.{name}'"
            + (" or the class to 'analysis.abnormal_classes'" if name == BUILTIN else "")
        )


def paper_abnormal_classes() -> list[str]:
    """The paper's five abnormal classes of its 11-class set (Sec. 4.4), from ``paper_results.yaml``."""
    from ._io import package_yaml

    return list(package_yaml("paper_results.yaml")["abnormal_classes"])


def abnormal_classes(analysis: dict) -> list[str]:
    """The abnormal classes of the clinical view: ``analysis.abnormal_set`` clinical (the Bethesda-based
    ``analysis.abnormal_classes``) or paper (the paper's five)."""
    if analysis.get("abnormal_set", "clinical") == "paper":
        return paper_abnormal_classes()
    return list(analysis.get("abnormal_classes", []))


def class_key(name: str) -> str:
    """A class name as compared: Unicode NFC and case folded, so ``LSIL`` and ``lsil``, or ``café`` typed
    as one character or as ``e`` and an accent, are one name (a dataset may not hold both; see
    :func:`check_distinct_classes`)."""
    return unicodedata.normalize("NFC", str(name)).casefold()


def abnormal_in(classes, abnormal) -> list[bool]:
    """For each name of ``classes``: whether it is one of ``abnormal``, compared by :func:`class_key`."""
    keys = {class_key(a) for a in abnormal}
    return [class_key(c) in keys for c in classes]


def abnormal_flags(classes, abnormal):
    """Per class, whether it is abnormal (a numpy bool array); None where the classes are all abnormal or
    all normal, so that nothing can be counted or ranked as abnormal against normal."""
    import numpy as np

    flags = np.array(abnormal_in(classes, abnormal or []), dtype=bool)
    return flags if flags.any() and not flags.all() else None


def check_distinct_classes(classes, where: str) -> None:
    """Two class names that are one name but for case or Unicode normalisation would be two classes that
    every reader takes for one: one line naming both and the fix."""
    seen: dict[str, str] = {}
    for name in classes:
        other = seen.setdefault(class_key(name), name)
        if other != name:
            raise CvmError(
                f"{where}: classes {other!r} and {name!r} differ only in letter case or Unicode "
                "normalisation; rename one folder (or value), or merge them if they are one class"
            )
