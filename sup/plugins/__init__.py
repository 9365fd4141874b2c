"""Plugins: the hook specification (`hookspecs`), the host that loads and calls them (`host`), and
the built-in ones that use the same hooks (`smtp`, `turn`). docs/plugins.md says how to write one."""
