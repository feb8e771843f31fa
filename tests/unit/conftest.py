"""Unit tests import the image layer's modules from the role that ships them."""

import sys
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "roles" / "orthanc_image" / "files" / "layer"
sys.path.insert(0, str(LAYER))
