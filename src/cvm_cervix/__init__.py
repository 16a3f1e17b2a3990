"""CVM-Cervix: cervical cytology classification with Xception ‖ DeiT-tiny → MLP, and its workflow."""

__version__ = "0.1.0"
