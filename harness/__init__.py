"""harness: an experiment harness for end-to-end fully convolutional object detection."""

__version__ = "0.1.0"
