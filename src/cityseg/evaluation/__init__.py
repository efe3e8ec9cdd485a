"""Evaluation: confusion-matrix metrics and `cityseg evaluate`, with the official
Cityscapes category score.
"""
