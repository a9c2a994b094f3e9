"""Robustness: how a model breaks under corruptions (MNIST-C), real-world shifts of scans and
photos, adversarial attacks (ART) and inputs that are not digits, as ``cnnlab robustness RUN``
measures it (:func:`run_robustness`)."""

from cnnlab.robustness.adversarial import ATTACKS, PixelSpaceModel, art_classifier, run_adversarial
from cnnlab.robustness.corruptions import CORRUPTIONS, corrupt, corrupt_images, mnist_c
from cnnlab.robustness.ood import OOD_SETS, non_digit_pages, run_ood
from cnnlab.robustness.shifts import SHIFTS, render_page, shifted_inputs
from cnnlab.robustness.suite import SUITES, RobustnessSettings, output_dir, run_robustness

__all__ = ["ATTACKS", "CORRUPTIONS", "OOD_SETS", "SHIFTS", "SUITES", "PixelSpaceModel",
           "RobustnessSettings", "art_classifier", "corrupt", "corrupt_images", "mnist_c",
           "non_digit_pages", "output_dir", "render_page", "run_adversarial", "run_ood",
           "run_robustness", "shifted_inputs"]
