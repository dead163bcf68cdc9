"""The staff console: server-rendered pages under /console on the same domain functions as the
API (docs/console.md)."""
