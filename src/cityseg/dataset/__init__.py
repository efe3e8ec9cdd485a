"""Datasets: the Cityscapes label facts, reading raw data (Cityscapes zips or own
annotations), the prepared format and its manifest. Imports nothing from the layers above.
"""
