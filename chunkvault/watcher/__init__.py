"""Watching the tree: inotify events, periodic scans, and turning both into changes."""
