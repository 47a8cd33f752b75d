"""faces: detectors (BlazeFace, Haar), the one crop, video."""
