"""The feedback loop: the store of users' confirmations and corrections, the model registry
(champion and challengers), and retraining on the feedback with promotion only when the
challenger is not worse.

Modules: :mod:`~cnnlab.feedback.store` (the feedback rows), :mod:`~cnnlab.feedback.versions`
(the model registry), :mod:`~cnnlab.feedback.retrain` (champion against challenger) and
:mod:`~cnnlab.feedback.drift` (predicted classes against the training data's). The HTTP
service and the CLI are shells over them; nothing here imports either.
"""
