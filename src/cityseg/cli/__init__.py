"""The `cityseg` command line, built with typer.

`app` is the typer application (to embed or test), `run(argv)` runs it and returns the
exit code, `main()` is the console script. Commands live one group per module: `data`
(prepare, remap, demo), `training` (train), `inference` (evaluate, predict, serve) and
`deploy` (export, benchmark) and `study` (tune, compare); `options` holds what they
share. Each command parses its options, makes one call into the Python API (`cityseg`:
`prepare`, `remap`, `demo`, `train`, `Model(...).evaluate` / `evaluate_predictions`,
`predict_files`, `Model(...).export`, `benchmark`, `tune`, `compare`; `serve` runs
`cityseg.serve`'s app) and prints the
result, so nothing a command does is out of reach from Python. The API's messages (the
"cityseg" logger) go to stderr while a command runs (`options.Command`, through
`cityseg.logs.cli_messages`), as the command's own `note`s do, never to stdout; `-q`
hides the bars, never the messages. Every default comes from `cityseg.config`.
"""

from cityseg.cli.root import app, main, run

__all__ = ["app", "main", "run"]
