"""Unit tests import the image layer's modules from the role that ships them, and the project's
Ansible modules from library/."""

import sys
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "roles" / "orthanc_image" / "files" / "layer"
LIBRARY = Path(__file__).resolve().parents[2] / "library"
sys.path.insert(0, str(LAYER))
sys.path.insert(0, str(LIBRARY))
