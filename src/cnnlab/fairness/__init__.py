"""Fairness across writers and other groups: metrics by group with intervals that resample
writers (:mod:`~cnnlab.fairness.metrics`), attributes measured from digit images
(:mod:`~cnnlab.fairness.attributes`), the groups of an evaluation
(:mod:`~cnnlab.fairness.groups`), the ``cnnlab fairness`` analysis and its report section
(:mod:`~cnnlab.fairness.analysis`), and mitigations (:mod:`~cnnlab.fairness.mitigation`).
"""
