"""The retrievers: :class:`UniversalCDRRetriever` (UEM) and :class:`TextPhaseRetriever`
(TPSNet), on the shared estimator machinery of :mod:`skucdr.retrievers._base`.

Import them from :mod:`skucdr`; this package imports nothing itself, so that
``import skucdr`` stays free of torch until a retriever is used.
"""
