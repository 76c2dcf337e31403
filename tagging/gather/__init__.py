"""Gathering and cleaning a character's images: booru fetch (``fetch``) and background removal (``clean``).

No Textual and no torch here; the CLI (``kazari fetch`` / ``kazari clean``) and the workbench's
Gather view call these modules.
"""
