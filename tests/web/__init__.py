"""Browser tests: the web client in a real headless Chromium, driven by Playwright."""
