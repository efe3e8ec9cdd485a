"""`cityseg prepare --format via|labelme|coco|masks`: a user's own annotated photos.

Whatever the source, the result is the prepared-dataset format the rest of cityseg reads:
PNG images and class-id masks plus a `manifest.json` that records the class list, palette,
ignore and void classes. Downstream commands read classes from there (or from the bundle
trained on it), never from the Cityscapes table, so an own dataset needs no flags later.
"""
