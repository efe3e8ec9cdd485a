"""The Python API: what the `cityseg` commands do, as objects and functions for notebooks.

    import cityseg

    cityseg.prepare("raw/")                       # cityseg prepare raw/
    cityseg.remap("data/cityscapes", scheme="trainids")  # cityseg remap ... --scheme trainids
    run = cityseg.train(epochs=5, size="256x512")  # cityseg train --epochs 5 --size 256x512
    model = cityseg.Model()                        # the newest run's best, as --model's default
    mask = model.predict("street.png")             # cityseg predict street.png --format ids
    model.predict_files(["photos/"], "masks/")     # cityseg predict photos/ -o masks/
    report = model.evaluate()                      # cityseg evaluate
    cityseg.evaluate_predictions("pred/")          # cityseg evaluate --predictions pred/
    model.export(["tflite-int8", "onnx"])          # cityseg export -f tflite-int8 -f onnx
    cityseg.benchmark([model, "other/best"])       # cityseg benchmark --model ... --model ...
    cityseg.demo("cityseg-demo")                   # cityseg demo
    cityseg.tune(space={"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, trials=20)
    cityseg.compare(["runs/tune/study"])           # cityseg compare runs/tune/study

Each call goes through the library function its command calls, and every command is
one call into this API, so the two never disagree; results are typed reports
(docs/python.md). Messages go through the standard `logging` module, under the "cityseg"
logger (`cityseg.logs`): on stdout unless you add a handler of your own first. Each call
takes `verbose`: `False` turns its bars off and keeps only the warnings.

The names are `cityseg`'s own (`cityseg.Model`, lazily imported); this package holds
one module a concept: `model`, `run`, `dataset`, `files`, `deploy`, `pipeline`, `study`.
"""
