"""What a model of this workflow is for and what it is not: one text, shown by the report and written
into every exported model card, so the two never say different things."""

from __future__ import annotations

INTENDED_USE = (
    "Research: reproducing and extending the experiments of the CVM-Cervix paper (Liu et al., Pattern "
    "Recognition 2022) on cervical cytology images, and comparing models under the same settings. "
    "Not for diagnosis, screening decisions or any clinical use: no model of this workflow has been "
    "validated on patients, and none is a medical device."
)

LIMITATIONS = (
    "Single-cell crops only: the models classify cells already cut from a slide, not whole slides.",
    "Trained and tested on one public dataset's images at a time; another laboratory's staining, "
    "scanner or preparation can change every number (the robustness of a run to such shifts is not "
    "measured by training accuracy).",
    "The paper's random split lets cells of one source image fall into both training and test "
    "splits; its test accuracy can be higher than on images from new slides (split: grouped keeps a "
    "source image's cells together).",
    "Class labels are those of the public datasets, with their own annotators and class definitions; "
    "the abnormal classes of the screening view are a configured list, not a clinical guideline.",
)

SYNTHETIC = (
    "Trained on synthetic images drawn by the workflow to test itself: its numbers say that the "
    "workflow runs, nothing about cells."
)
