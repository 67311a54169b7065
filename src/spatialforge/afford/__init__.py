"""AffordanceCLIP: zero-shot affordance grounding with a frozen CLIP ResNet and a light FPN.

Torch-free modules: ``metrics`` (KLD / SIM / NSS, the AGD20K protocol), ``agd20k`` (the test-set
layout and prediction scoring), ``refcoco`` (the refer-distribution loader), ``prompts``,
``config``. The torch modules (``model``, ``train``, ``predict``) need ``spatialforge[afford]``.
"""
