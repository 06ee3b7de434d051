"""Model governance: the model registry, shadow versions and the promotion gate, monitoring per subgroup
and site, drift without labels, intended-use guardrails, the hash-chained audit trail and the export of
reviewed cases for retraining.

Models live in ``radiology.governance.models`` (imported by ``radiology.models`` so Django registers them
under the ``radiology`` app); writes in ``services``, reads in ``selectors``, statistics in ``stats``
(pure numpy, no Django).
"""
