"""cityseg: Cityscapes from the raw zips to a trained model and colour masks.

Importing the package stays cheap on purpose: `cityseg --help` and `cityseg remap`
must never pay for TensorFlow, so this module holds the version and nothing else.
"""

__version__ = "0.1.0"
