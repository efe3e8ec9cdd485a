"""`cityseg.Model`: a trained (or exported) model in a notebook, as `cityseg predict`,
`evaluate`, `export` and `benchmark` use it in a shell.

Opening a model reads its card only; TensorFlow (or TFLite, onnxruntime) loads on the
first prediction and stays loaded, so `Model(path).classes` is instant and a loop of
`predict` calls pays for the model once. Predictions go through the same `Predictor`
as `cityseg predict` (resize to the training size, model, probabilities resized back,
argmax), so a mask from here equals the CLI's `--format ids` PNG for the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from cityseg import images
from cityseg.api import images as inputs
from cityseg.api._common import PathLike, optional_path, size_of
from cityseg.config import (
    BENCHMARK,
    DEFAULT_PROJECT,
    EVALUATE,
    EXPORT,
    PREDICT,
    ExportFormat,
    Split,
)
from cityseg.inference.bundle import CardFacts, read_card
from cityseg.inference.predictor import newest_bundle
from cityseg.inference.pretrained import named_or_path
from cityseg.inference.runtimes import model_format
from cityseg.inference.sliding import Window, as_window
from cityseg.logs import api_messages
from cityseg.progress import track
from cityseg.runs import resolve_data, run_dir_of

if TYPE_CHECKING:
    from typing import Unpack

    from cityseg.api.files import PredictFileOptions
    from cityseg.api.images import ImageInput
    from cityseg.api.run import Run
    from cityseg.deploy.benchmark import BenchmarkReport
    from cityseg.deploy.export import ExportReport
    from cityseg.evaluation.report import EvalReport
    from cityseg.inference.predict import PredictReport
    from cityseg.inference.predictor import Predictor
    from cityseg.inference.runtimes import LoadedModel

Masks = list[np.ndarray]
WithProbabilities = list[tuple[np.ndarray, np.ndarray]]
Format = str | ExportFormat
logger = logging.getLogger(__name__)


class Model(CardFacts):
    """A bundle or export folder (or its model.tflite / model.onnx), or a pretrained
    model's name ("segformer-b0-cityscapes", `cityseg.inference.pretrained`); None: the
    newest run's best bundle under `project`, as every CLI command defaults to. `verbose` shows
    the bars and messages of its calls (messages: the "cityseg" logger, see
    `cityseg.logs`); `verbose=False` keeps only the warnings."""

    def __init__(
        self,
        path: PathLike | None = None,
        *,
        project: PathLike = DEFAULT_PROJECT,
        verbose: bool = True,
    ) -> None:
        self._verbose = verbose
        if path is None:
            with api_messages(verbose):
                path = newest_bundle(Path(project))
                logger.info(f"model: {path} (the newest run's best under {project})")
        with api_messages(verbose):  # a pretrained name is built into a bundle once
            folder, self._card = read_card(named_or_path(Path(path)))
        self.path = folder
        """The model folder (for a model.tflite path, the folder holding it)."""
        self._loaded: LoadedModel | None = None
        self._loaded_at: dict[tuple[int, int], LoadedModel] = {}
        self._predictors: dict[tuple[bool, Window | None], Predictor] = {}

    # ----------------------------------------------------------------------- the card

    @property
    def card(self) -> dict[str, Any]:
        """The model card (cityseg.json) as recorded; a copy."""
        return dict(self._card)

    @property
    def format(self) -> str:
        """keras for a bundle, else the export format (tflite-int8, onnx, ...)."""
        return model_format(self._card)

    @property
    def scheme(self) -> str:
        return str(self._card.get("scheme") or "")

    @property
    def run(self) -> Run | None:
        """The training run this model lies in, or None for a model from elsewhere."""
        from cityseg.api.run import Run

        folder = run_dir_of(self.path)
        return None if folder is None else Run(folder)

    def colourise(self, mask: np.ndarray) -> np.ndarray:
        """A mask as HxWx3 RGB in the model's palette (what `--format colour` writes)."""
        return images.colourise(np.asarray(mask), self.palette)

    # ----------------------------------------------------------------------- predict

    @overload
    def predict(
        self,
        images: ImageInput,
        *,
        probabilities: Literal[False] = ...,
        tta: bool = ...,
        batch: int = ...,
        slide: str | Window | None = ...,
    ) -> np.ndarray: ...

    @overload
    def predict(
        self,
        images: ImageInput,
        *,
        probabilities: Literal[True],
        tta: bool = ...,
        batch: int = ...,
        slide: str | Window | None = ...,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def predict(
        self,
        images: list[ImageInput] | tuple[ImageInput, ...],
        *,
        probabilities: Literal[False] = ...,
        tta: bool = ...,
        batch: int = ...,
        slide: str | Window | None = ...,
    ) -> Masks: ...

    @overload
    def predict(
        self,
        images: list[ImageInput] | tuple[ImageInput, ...],
        *,
        probabilities: Literal[True],
        tta: bool = ...,
        batch: int = ...,
        slide: str | Window | None = ...,
    ) -> WithProbabilities: ...

    def predict(
        self,
        images: ImageInput | list[ImageInput] | tuple[ImageInput, ...],
        *,
        probabilities: bool = False,
        tta: bool = PREDICT.tta_flip,
        batch: int = PREDICT.batch,
        slide: str | Window | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray] | Masks | WithProbabilities:
        """Class-id masks (uint8, HxW, at each input's own size) for one image or a list.

        An image is a path, an HxWx3 uint8 RGB array or a PIL image (see
        `cityseg.api.images`). With `probabilities`, each result is `(mask, probs)`,
        probs float32 HxWxC summing to 1 per pixel. `tta` averages with the flipped
        image, as `--tta flip`; `slide` ("512x512:384", or a `Window`) runs the model on
        overlapping crops of each image at its own size, as `--slide`. One input gives
        one result, a list a list.
        """
        single = inputs.is_single(images)
        items = inputs.as_list(images)
        predictor = self.predictor(tta=tta, slide=slide)
        chunks = [items[i : i + max(1, batch)] for i in range(0, len(items), max(1, batch))]
        shown = self._verbose and len(chunks) > 1
        results: list[Any] = []
        for chunk in track(chunks, len(chunks), f"predict {len(items)}", enabled=shown):
            rgb = [inputs.to_rgb(item) for item in chunk]
            if probabilities:
                results.extend(predictor.predict_with_probabilities(rgb))
            else:
                results.extend(predictor.predict(rgb))
        return results[0] if single else results

    def predictor(self, *, tta: bool = False, slide: str | Window | None = None) -> Predictor:
        """The `Predictor` predict, evaluate and serve share, over this loaded model."""
        from cityseg.inference.predictor import Predictor

        window = as_window(slide)
        key = (tta, window)
        if key not in self._predictors:  # one each: a loop of predict calls says things once
            self._predictors[key] = Predictor(self._model_for(window), tta_flip=tta, window=window)
        return self._predictors[key]

    def _model_for(self, window: Window | None) -> LoadedModel:
        """The loaded model; a bundle slid with another window is rebuilt at its size
        (`sliding_size`), once per size."""
        from cityseg.inference.predictor import sliding_size
        from cityseg.inference.runtimes import open_model

        size = sliding_size(self.path, window)
        if size is None:
            if self._loaded is None:
                self._loaded = open_model(self.path)
            return self._loaded
        if size not in self._loaded_at:
            self._loaded_at[size] = open_model(self.path, size=size)
        return self._loaded_at[size]

    # ----------------------------------------------------------------------- evaluate

    def evaluate(
        self,
        data: PathLike | None = None,
        split: str | Split = EVALUATE.split,
        *,
        tta: bool = EVALUATE.tta_flip,
        batch: int = EVALUATE.batch,
        project: PathLike = EVALUATE.project,
        name: str | None = None,
        write_labelids: PathLike | None = None,
        scheme: str | None = None,
        slide: str | Window | None = None,
    ) -> EvalReport:
        """Score the model on a prepared split, as `cityseg evaluate --model PATH` does.

        `data` defaults to the dataset the model's run trained on. Writes
        `project/<name>/` (metrics.json, per_image.csv, confusion.png) and returns its
        typed report. The model loads once the split is checked, and stays loaded.
        """
        from cityseg.evaluation.evaluate import evaluate

        with api_messages(self._verbose):
            return evaluate(
                data=resolve_data(optional_path(data), self.path),
                split=split.value if isinstance(split, Enum) else split,
                write_labelids=optional_path(write_labelids),
                project=Path(project),
                name=name,
                batch=batch,
                show_progress=self._verbose,
                scheme=scheme,
                loader=lambda: self.predictor(tta=tta, slide=slide),
            )

    # ----------------------------------------------------------------------- deploy

    @overload
    def export(
        self,
        format: Format,
        *,
        output: PathLike | None = ...,
        data: PathLike | None = ...,
        size: str | tuple[int, int] | None = ...,
        calib: int = ...,
        parity: int = ...,
    ) -> ExportReport: ...

    @overload
    def export(
        self,
        format: list[Format] | tuple[Format, ...],
        *,
        output: PathLike | None = ...,
        data: PathLike | None = ...,
        size: str | tuple[int, int] | None = ...,
        calib: int = ...,
        parity: int = ...,
    ) -> list[ExportReport]: ...

    def export(
        self,
        format: Format | list[Format] | tuple[Format, ...],
        *,
        output: PathLike | None = None,
        data: PathLike | None = None,
        size: str | tuple[int, int] | None = None,
        calib: int = EXPORT.calib,
        parity: int = EXPORT.parity,
    ) -> ExportReport | list[ExportReport]:
        """Export this Keras bundle (`cityseg export -f FORMAT`), with its parity report.

        Writes `<run>/export/<format>/` by default; `Model(report.folder)` opens the
        export. `data` (for int8 calibration and parity) defaults to the run's dataset.
        A list of formats (`-f a -f b`) builds the Keras model, its converter and the
        parity reference once for all, and gives a list of reports; `output` is then
        the parent of one folder per format.
        """
        from cityseg.deploy.export import export_model

        several = isinstance(format, (list, tuple))
        chosen = list(format) if isinstance(format, (list, tuple)) else [format]
        with api_messages(self._verbose):
            reports = export_model(
                self.path,
                [f.value if isinstance(f, Enum) else str(f) for f in chosen],
                optional_path(output),
                data=resolve_data(optional_path(data), self.path),
                size=size_of(size),
                calib=calib,
                parity=parity,
            )
        return reports if several else reports[0]

    def benchmark(
        self,
        *,
        size: str | tuple[int, int] | None = None,
        runs: int = BENCHMARK.runs,
        batch: int = BENCHMARK.batch,
        exports: bool = BENCHMARK.include_exports,
    ) -> BenchmarkReport:
        """Time this model (and, for a bundle, its run's exports) on this machine; several
        models at once are `cityseg.benchmark([...])`."""
        from cityseg.api.deploy import benchmark

        return benchmark(
            [self.path], size=size, runs=runs, batch=batch, exports=exports, verbose=self._verbose
        )

    # ----------------------------------------------------------------------- files

    def predict_files(
        self,
        inputs: PathLike | Sequence[PathLike],
        output: PathLike,
        **options: Unpack[PredictFileOptions],
    ) -> PredictReport:
        """Write a mask file per input image, as `cityseg predict INPUT... -o OUTPUT
        --model PATH` does. The options are `cityseg.predict_files`' (format, legend,
        alpha, tta, batch, slide, verbose), with the same defaults but `verbose`: the
        model's own. The model stays loaded."""
        from cityseg.api.files import predict_files

        options.setdefault("verbose", self._verbose)
        return predict_files(inputs, output, model=self, **options)

    def __repr__(self) -> str:
        card = self._card
        arch = "-".join(str(card[k]) for k in ("arch", "backbone") if card.get(k))
        height, width = self.input_size
        return (
            f"Model({str(self.path)!r}, {arch or 'unknown'}, {self.format}, "
            f"{len(self.classes)} classes, {height}x{width})"
        )
