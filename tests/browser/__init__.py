"""Helpers for the viewer tests (a tiny fake run folder); the browser test itself is tests/test_viewer_browser.py."""
