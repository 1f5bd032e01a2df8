"""Shared by the cache tests: a real extractor wrapped to count its forward passes and rows."""

from __future__ import annotations


class CountingExtractor:
    """Wraps a real extractor; ``calls`` counts forward passes, ``rows`` the inputs they covered.

    Offers ``extract_with_source_probs`` when the wrapped extractor has a source head.
    """

    def __init__(self, inner):
        self.inner, self.calls, self.rows = inner, 0, 0
        self.identity, self.modality = inner.identity, inner.modality
        if hasattr(inner, "extract_with_source_probs"):
            self.source_classes = inner.source_classes
            self.extract_with_source_probs = self._with_probs

    def extract(self, inputs, batch_size=64, progress=None):
        self.calls, self.rows = self.calls + 1, self.rows + len(inputs)
        return self.inner.extract(inputs, batch_size, progress)

    def _with_probs(self, inputs, batch_size=64, progress=None):
        self.calls, self.rows = self.calls + 1, self.rows + len(inputs)
        return self.inner.extract_with_source_probs(inputs, batch_size, progress)
