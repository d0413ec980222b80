"""What a training step keeps in memory, chosen apart from the architecture (issue #28).

The models (``segnet.py``, ``deconvnet.py``, ``vgg.py``, ``decoder.py``) have one forward path, the
paper's. A :class:`MemoryPolicy` is applied to a built model from outside (:func:`apply_policy`; the
registry does it from the ``lean``/``recompute``/``recompute_fc`` model keys) and changes only what
autograd keeps, never a result: ``policy.py`` (the policy and how it wraps the stages), ``lean.py``
(rebuild element-wise maps in backward), ``recompute.py`` (run stages again in backward),
``switches.py`` + ``switch_kernels.py`` (1-byte pooling switches).
"""
from segdeconv.models.memory.policy import MemoryPolicy, apply_policy, policy_of, split_policy

__all__ = ["MemoryPolicy", "apply_policy", "policy_of", "split_policy"]
