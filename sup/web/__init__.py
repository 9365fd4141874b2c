"""The browser client: static ES modules served as they are (no build step)."""
