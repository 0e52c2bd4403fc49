"""The hardware-in-the-loop suite (pytest hil); see hil/conftest.py and docs/hil.md."""
