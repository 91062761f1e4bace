"""Pipeline profiles (JSON): demo, ci, full."""
