"""Blob stores: files on disk or in S3, behind one interface (store.py)."""
