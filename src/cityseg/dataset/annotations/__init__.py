"""Readers for hand-made annotations (VIA, LabelMe, COCO) and one rasteriser for them all.

Every reader turns its format into the same small model (`shapes.ImageAnnotation`) so that
`cityseg prepare` rasterises all of them with one function whose pixel convention is
pycocotools': a pixel belongs to a shape when (roughly) its centre, at (col + 0.5,
row + 0.5), lies inside. Modules are imported on use; this package imports nothing heavy.
"""
