"""Metrics and result tables: classification (thesis 003 Tables 4.2-4.6) and, per module, the rest.

Each module holds plain functions on label, score or image arrays; none of them keeps state.
"""
