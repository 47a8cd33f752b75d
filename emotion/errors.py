class EmotionError(Exception):
    """A problem the user can fix (bad path, bad data, bad model file). The CLI prints it on one line."""
