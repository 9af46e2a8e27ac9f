"""The frontend: ONNX models into the `onnx` phase (dlc/frontend/importer.py)."""
