"""The project's error types. Every user-facing failure is one of these, with a message
that names the file (and line/key where there is one) and the problem."""


class Yolo4Error(Exception):
    """Base class of every error yolo4 raises on purpose."""


class CfgError(Yolo4Error):
    """A darknet .cfg file (or a layer built in Python) is malformed."""


class WeightsError(Yolo4Error):
    """A darknet .weights file or a checkpoint does not match its network."""


class DataError(Yolo4Error):
    """A dataset, image, label or video cannot be used."""


class ExportError(Yolo4Error):
    """A model cannot be exported or run in the chosen runtime."""
